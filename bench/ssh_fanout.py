"""Benchmark: `echo ok` on N lab hosts through opsplane.ssh, beside bare asyncssh.

    .venv/bin/python bench/ssh_fanout.py [--hosts 500] [--parallel 200] [--rounds 3]

Starts the asyncssh lab in a subprocess (its own cores' worth of work, as a real fleet
would be elsewhere; here it shares the machine), then runs the same fan-out two ways:
- bare: asyncssh.connect with the pinned key, run, close (the floor);
- opsplane: opsplane.ssh.connect + run (pinned keys, error mapping, isolation options).
Prints the median of the rounds for each. Baseline (reference/performance.md, same kind
of machine): bare asyncssh gather, 200 at a time, ~1.8 s for 500 hosts, ~2.7 s for 1,000;
parallel-ssh ~2.1 s; Ansible `-m raw -f 200` ~16 s.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from changes_engine import bare  # noqa: E402 - the floor, as every bench measures it

from opsplane import lab, ssh  # noqa: E402
from opsplane.testing.ssh import free_port  # noqa: E402


async def opsplane(specs, parallel):
    limit = asyncio.Semaphore(parallel)

    async def one(spec):
        async with limit, await ssh.connect(spec) as conn:
            result = await ssh.run(conn, "echo ok")
            return result.stdout == "ok\n"

    return await asyncio.gather(*(one(s) for s in specs))


def measure(runner, specs, parallel, rounds):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        results = asyncio.run(runner(specs, parallel))
        times.append(time.perf_counter() - started)
        assert results is True or all(results), "a host did not answer ok"
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="opsplane-bench-lab-"))
    port = free_port("127.0.88.1")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "lab", "--hosts", str(args.hosts),
         "--base", "127.0.88.1", "--port", str(port), "--dir", str(directory)],
        cwd=ROOT, stdout=subprocess.DEVNULL,
        env={**os.environ, "OPSPLANE_VAR_DIR": str(directory / "var")},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                inventory = lab.read_inventory(directory)
                if inventory.get("pid") == server.pid:
                    break
            except (FileNotFoundError, ValueError):
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the lab did not start")
            time.sleep(0.1)
        specs = lab.connection_specs(inventory)
        print(f"{args.hosts} lab hosts, {args.parallel} at a time, median of {args.rounds}:")
        floor = measure(bare, specs, args.parallel, args.rounds)
        ours = measure(opsplane, specs, args.parallel, args.rounds)
        print(f"  bare asyncssh      {floor:6.2f} s   ({args.hosts / floor:5.0f} hosts/s)")
        print(f"  opsplane.ssh       {ours:6.2f} s   ({args.hosts / ours:5.0f} hosts/s)"
              f"   {ours / floor:4.2f}x the floor")
        print("baseline (performance.md): bare asyncssh 500 hosts ~1.8 s, 1,000 ~2.7 s; "
              "parallel-ssh ~2.1 s; Ansible raw -f 200 ~16 s")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
