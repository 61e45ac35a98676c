"""Benchmark: the change engine on N lab hosts, beside bare asyncssh and Ansible.

    .venv/bin/python bench/changes_engine.py [--hosts 500] [--parallel 200] [--rounds 3]
                                             [--no-ansible]

Starts the asyncssh lab in a subprocess (it shares this machine's cores, as in
bench/ssh_fanout.py), then times `echo ok` on every host three ways, interleaved
A B C A B C ... so that drift in the machine's speed hits all three alike:
- A bare: asyncssh.connect with the pinned key, run, close, under a semaphore (the
  baseline every ratio is against);
- B engine: changes.engine.execute with one shell step and a NullSink;
- C ansible: `ansible all -m raw -a 'echo ok' -f <parallel>` with a generated INI
  inventory, host keys checked against the lab's known_hosts, ControlMaster off (every
  round connects afresh, like A and B).
Prints the median of the rounds for each and the ratios to A. Reference figures
(reference/performance.md, same kind of machine): bare asyncssh 500 hosts at 200 ~1.8 s;
Ansible raw -f 200 ~16 s.
"""

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from changes import engine  # noqa: E402
from opsplane import lab  # noqa: E402
from opsplane.testing.ssh import free_port  # noqa: E402

BASE = "127.0.130.1"  # away from the test labs and bench/ssh_fanout.py


async def bare(specs, parallel):
    limit = asyncio.Semaphore(parallel)

    async def one(spec):
        async with limit:
            keys = [asyncssh.import_public_key(k) for k in spec.host_keys]
            async with asyncssh.connect(
                spec.host, spec.port, username=spec.username, known_hosts=(keys, [], []),
                client_keys=list(spec.client_keys), config=None, agent_path=None,
            ) as conn:
                result = await conn.run("echo ok")
                return result.stdout == "ok\n"

    return all(await asyncio.gather(*(one(s) for s in specs)))


async def through_engine(specs, parallel):
    targets = [engine.Target(name=spec.name, spec=spec) for spec in specs]
    outcome = await engine.execute(
        targets, [engine.Step(name="echo", kind="shell", command="echo ok")],
        engine.Strategy(parallelism=parallel), params={}, sink=engine.NullSink(),
        cancel=asyncio.Event(),
    )
    return all(h.state == "ok" and h.exit_status == 0 for h in outcome.hosts)


def ansible_setup(inventory, directory):
    """An INI inventory and the environment for `ansible` in ``directory``."""
    lines = ["[lab]"]
    for host in inventory["hosts"]:
        lines.append(
            f"{host['name']} ansible_host={host['address']} ansible_port={host['port']} "
            f"ansible_user={host['user']} ansible_ssh_private_key_file={inventory['client_key']}"
        )
    path = directory / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    (directory / "ansible.cfg").write_text("[defaults]\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(directory / "ansible.cfg"),  # not one found in the cwd
        "ANSIBLE_HOME": str(directory / "home"),
        "ANSIBLE_LOCAL_TEMP": str(directory / "tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # The lab's known_hosts pins every host's key; ~/.ssh is not consulted.
        "ANSIBLE_SSH_ARGS": (
            f"-F /dev/null -o UserKnownHostsFile={inventory['known_hosts']} "
            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes -o ControlMaster=no"
        ),
        # Without this the ssh plugin asks for a pseudo-terminal (-tt) for raw, which the
        # lab refuses, as hosts that run commands over pipes may.
        "ANSIBLE_SSH_USETTY": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    return path, env


def run_ansible(path, env, parallel, hosts):
    result = subprocess.run(
        [str(ROOT / ".venv/bin/ansible"), "all", "-i", str(path), "-m", "raw",
         "-a", "echo ok", "-f", str(parallel)],
        env=env, capture_output=True, text=True, check=False,
    )
    answered = result.stdout.count(" | CHANGED | rc=0 >>\nok\n")
    if result.returncode or answered != hosts:
        raise SystemExit(f"ansible: status {result.returncode}, {answered} of {hosts} ok:\n"
                         f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return True


def cpu_seconds():
    """CPU used by this process and by its finished children (ansible and its ssh
    processes), so not by the lab, which is still running."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(function, *args):
    """Wall-clock and client CPU seconds of one round."""
    cpu, started = cpu_seconds(), time.perf_counter()
    ok = function(*args)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert ok, "a host did not answer ok"
    return elapsed, cpu


def start_lab(hosts, directory):
    port = free_port(BASE)
    server = subprocess.Popen(
        [sys.executable, "manage.py", "lab", "--hosts", str(hosts),
         "--base", BASE, "--port", str(port), "--dir", str(directory)],
        cwd=ROOT, stdout=subprocess.DEVNULL,
        env={**os.environ, "OPSPLANE_VAR_DIR": str(directory / "var")},
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            inventory = lab.read_inventory(directory)
            if inventory.get("pid") == server.pid:
                return server, inventory
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("the lab did not start")
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ansible", action="store_true", help="skip C (it takes longest)")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="opsplane-bench-engine-"))
    server, inventory = start_lab(args.hosts, directory)
    try:
        specs = lab.connection_specs(inventory)
        ansible_dir = directory / "ansible"
        ansible_dir.mkdir()
        ansible_inventory, ansible_env = ansible_setup(inventory, ansible_dir)
        runners = {
            "A bare asyncssh": lambda: asyncio.run(bare(specs, args.parallel)),
            "B engine": lambda: asyncio.run(through_engine(specs, args.parallel)),
        }
        if not args.no_ansible:
            runners["C ansible raw"] = lambda: run_ansible(
                ansible_inventory, ansible_env, args.parallel, args.hosts)
        times = {name: [] for name in runners}
        cpus = {name: [] for name in runners}
        for round_ in range(args.rounds):
            for name, runner in runners.items():
                elapsed, cpu = timed(runner)
                times[name].append(elapsed)
                cpus[name].append(cpu)
            print(f"round {round_ + 1}: " + "  ".join(
                f"{name.split()[0]} {values[-1]:.2f}s" for name, values in times.items()),
                flush=True)
        medians = {name: statistics.median(values) for name, values in times.items()}
        cpu = {name: statistics.median(values) for name, values in cpus.items()}
        floor, cpu_floor = medians["A bare asyncssh"], cpu["A bare asyncssh"]
        print(f"\n{args.hosts} lab hosts, {args.parallel} at a time, `echo ok`, "
              f"median of {args.rounds} (baseline: A, bare asyncssh gather):")
        print(f"  {'':17} {'wall':>8}  {'hosts/s':>7}  {'ratio':>6}  {'client CPU':>10}  ratio")
        for name, median in medians.items():
            print(f"  {name:17} {median:6.2f} s  {args.hosts / median:7.0f}  "
                  f"{median / floor:5.2f}x  {cpu[name]:8.2f} s  {cpu[name] / cpu_floor:5.2f}x")
        print("client CPU: this process, plus ansible and its ssh children for C; "
              "the lab's CPU is not in it.")
        print("reference (performance.md): bare asyncssh 500 hosts ~1.8 s; "
              "Ansible raw -f 200 ~16 s")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
