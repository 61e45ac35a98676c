"""Benchmark: a whole change on N lab hosts, from "start" to "all hosts done", through
Celery, the database and the channel layer, beside bare asyncssh and Ansible.

    .venv/bin/python bench/change_e2e.py [--hosts 500] [--parallel 200] [--rounds 3]
                                         [--no-ansible]

Starts the lab (one process) and a real Celery worker (a subprocess consuming `runs`),
loads the lab's hosts into the inventory, then times `echo ok` on every host three ways,
interleaved A B C A B C so the machine's drift hits them alike:
- A bare asyncssh gather at the same concurrency (the floor);
- B opsplane: services.start_run on a ready change, the worker claims it, the engine runs
  it, results are written in batches; timed until the run is finished in the database;
- C `ansible all -m raw -a 'echo ok' -f <parallel>` (what users run today).
Targets (issue 4): B within 1.5x of A, and at least 5x faster than C, at 500 hosts /
parallelism 200. Uses DATABASE_URL / REDIS_URL when set, else a temporary SQLite file and
the embedded Redis.
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

import changes_engine as shared  # noqa: E402 - the lab, bare asyncssh and Ansible runners


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ansible", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="opsplane-bench-e2e-"))
    os.environ["OPSPLANE_VAR_DIR"] = str(tmp / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "opsplane.settings"
    redis_server = None
    if not os.environ.get("REDIS_URL"):
        from opsplane.embedded_redis import EmbeddedRedis

        redis_server = EmbeddedRedis(tmp / "redis", persist=False).start()
        os.environ["REDIS_URL"] = redis_server.url
    import django

    django.setup()
    from django.core.management import call_command

    from approvals import testing as approvals_testing
    from changes import services
    from changes.models import Run, Runbook
    from opsplane import demo
    from opsplane import lab as lab_module

    call_command("migrate", verbosity=0)
    lab_server, inventory = shared.start_lab(args.hosts, tmp / "lab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "opsplane.celery", "worker", "-Q", "runs",
         "-c", "1", "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=dict(os.environ),
    )
    try:
        inventory_file = tmp / "lab" / "inventory.json"
        demo.load(tmp / "logins.json", lab_inventory=inventory_file)
        from django.contrib.auth import get_user_model

        admin = get_user_model().objects.get(username="admin")
        # prod is protected: an approver other than the author signs each round off,
        # through the same service the inbox uses (outside the timed part).
        approver = get_user_model().objects.get(username="approver")
        runbook = services.save_runbook(Runbook(), name="bench-echo", description="",
                                        definition="steps:\n  - name: echo\n    kind: shell\n"
                                                   "    command: echo ok\n", by=admin)
        specs = lab_module.connection_specs(inventory)
        ansible_path, ansible_env = shared.ansible_setup(inventory, tmp)

        def opsplane_round():
            change = services.compose_change(
                title="bench", runbook=runbook, selector="", params={},
                strategy={"parallelism": args.parallel}, by=admin)
            services.submit_change(change, by=admin)
            change.refresh_from_db()
            if change.status == change.Status.PENDING_APPROVAL:
                approvals_testing.approve(change, by=approver)
            run = services.start_run(change, by=admin)
            while True:
                run.refresh_from_db()
                if run.is_terminal:
                    break
                time.sleep(0.01)
            ok = run.results.filter(state="ok").count()
            assert run.status == Run.Status.SUCCEEDED and ok == args.hosts, (run.status, ok)
            return True

        runners = {
            "A bare asyncssh": lambda: asyncio.run(shared.bare(specs, args.parallel)),
            "B opsplane change": opsplane_round,
        }
        if not args.no_ansible:
            runners["C ansible raw"] = lambda: shared.run_ansible(
                ansible_path, ansible_env, args.parallel, args.hosts)
        opsplane_round()  # warm-up: the worker's first run imports and connects
        times = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, runner in runners.items():
                started = time.perf_counter()
                assert runner()
                times[name].append(time.perf_counter() - started)
        floor = statistics.median(times["A bare asyncssh"])
        print(f"{args.hosts} lab hosts, parallelism {args.parallel}, `echo ok`, median of "
              f"{args.rounds} interleaved rounds:")
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"  {name:<20} {median:6.2f} s   {median / floor:5.2f}x A")
        if "C ansible raw" in times:
            ratio = statistics.median(times["C ansible raw"]) / statistics.median(
                times["B opsplane change"])
            print(f"  opsplane is {ratio:.1f}x faster than Ansible")
        print("targets: B within 1.5x of A; at least 5x faster than C")
    finally:
        worker.terminate()
        worker.wait(30)
        lab_server.terminate()
        lab_server.wait(10)
        if redis_server:
            redis_server.stop()


if __name__ == "__main__":
    main()
