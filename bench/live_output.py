"""Benchmark: a run's output persisted and streamed live, 200 lab hosts x 5,000 lines.

    .venv/bin/python bench/live_output.py [--hosts 200] [--lines 5000] [--rate 0]
                                          [--parallel 200] [--viewers 1]

Starts the asyncssh lab (a subprocess), uvicorn serving opsplane.asgi (a subprocess) and a
Celery worker (a subprocess, solo pool, so its peak RSS is the run's), loads the lab into
the inventory, then:
- A bare asyncssh: the same command on every host, 200 at a time, reading and counting
  the lines (the floor: reading alone);
- B opsplane: a change whose step prints the lines, started with services.start_run: the
  worker runs the engine, DatabaseSink numbers and writes every line in batches and
  publishes each batch to the run's channel group; viewers (subprocesses) connected to
  ws/runs/<id>/?after=0 through uvicorn on loopback before the start receive every line.
Each viewer checks the seq numbers (zero missing, zero duplicated) and measures each
line's latency from the worker reading it (events carry that time) to the viewer
receiving it. Then the stored output is read back and checked, and its compaction timed.

`--rate N` paces the hosts to about N lines/s in all (a burst a second each, spread over
the second; 0: as fast as they print). With DATABASE_URL set (PostgreSQL) the bench makes
a database of its own beside the named one (`<name>_live_bench`, dropped at the end); with
REDIS_URL set it uses that Redis; else a temporary SQLite file and the embedded Redis.

Reference figures (reference/performance.md, same kind of machine): bare asyncssh reads
1,000,000 lines from 200 hosts in ~2.65 s (~377,000 lines/s); AWX documents ~1,100 job
events/s on 4 CPUs. Targets (issue 5): >= 20,000 lines/s persisted and streamed, zero
missing or repeated, viewer p99 <= 250 ms; the worker's memory bounded (peak RSS shown).
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PAD = "x" * 40  # lines of about 60 characters, like a busy log


def command(lines, rate, hosts):
    """The shell command each host runs: ``lines`` numbered lines, paced when ``rate``."""
    fmt = f'"$OPSPLANE_LAB_HOST line %g {PAD}"'
    if not rate:
        return f"seq -f {fmt} 1 {lines}"
    per_host = max(1.0, rate / hosts)
    period = 1.0
    burst = max(1, int(per_host * period))
    pause = burst / per_host
    # Hosts start together; each waits a slice of the period first (by its number), so
    # that their bursts spread over the period instead of all landing at once.
    return (f"n=${{OPSPLANE_LAB_HOST##*-}}; sleep 0.$(( 1${{n}} % 10 )); "
            f"i=0; while [ $i -lt {lines} ]; do "
            f"n=$((i+{burst})); if [ $n -gt {lines} ]; then n={lines}; fi; "
            f"seq -f {fmt} $((i+1)) $n; i=$n; "
            f"if [ $i -lt {lines} ]; then sleep {pause:.3f}; fi; done")


# --- the viewer (a subprocess: its own core, as a browser would be) ------------------------


async def view(url, cookie, origin, result_path, ready_path):
    import websockets

    missing = duplicated = lines = 0
    expected = 1
    latencies = {}  # rounded ms -> lines
    first_at = last_recv = None
    async with websockets.connect(url, additional_headers={"Cookie": cookie}, origin=origin,
                                  max_size=None, ping_interval=None) as socket:
        Path(ready_path).write_text("ready")
        async for raw in socket:
            now = time.time()
            message = json.loads(raw)
            kind = message["type"]
            if kind == "events":
                for seq, _host, _step, _stream, text, at in message["events"]:
                    count = text.count("\n") + (0 if text.endswith("\n") else 1)
                    end = seq + count - 1
                    if seq > expected:
                        missing += seq - expected
                    if seq < expected:
                        duplicated += min(end, expected - 1) - seq + 1
                    expected = max(expected, end + 1)
                    lines += count
                    key = round((now - at) * 1000)
                    latencies[key] = latencies.get(key, 0) + count
                    first_at = at if first_at is None else min(first_at, at)
                last_recv = now
            elif kind == "end":
                last_seq = message["seq"]
                break
    Path(result_path).write_text(json.dumps({
        "lines": lines, "missing": missing + max(0, last_seq - (expected - 1)),
        "duplicated": duplicated, "last_seq": last_seq, "first_at": first_at,
        "last_recv": last_recv, "latencies": sorted(latencies.items())}))


def percentile(histogram, fraction):
    total = sum(count for _, count in histogram)
    seen = 0
    for value, count in histogram:
        seen += count
        if seen >= fraction * total:
            return value
    return histogram[-1][0] if histogram else 0


# --- the bench ---------------------------------------------------------------------------


async def bare(specs, parallel, cmd):
    """Bare asyncssh: run ``cmd`` everywhere, read and count its lines."""
    import asyncssh

    limit = asyncio.Semaphore(parallel)

    async def one(spec):
        async with limit:
            keys = [asyncssh.import_public_key(k) for k in spec.host_keys]
            async with asyncssh.connect(
                spec.host, spec.port, username=spec.username, known_hosts=(keys, [], []),
                client_keys=list(spec.client_keys), config=None, agent_path=None,
            ) as conn:
                process = await conn.create_process(cmd)
                count = 0
                while chunk := await process.stdout.read(65536):
                    count += chunk.count("\n")
                await process.wait_closed()
                return count

    return sum(await asyncio.gather(*(one(spec) for spec in specs)))


def rss_peak(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wait_http(url, timeout=60):
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} does not answer")


def scratch_database(url):
    """A fresh PostgreSQL database beside the one ``url`` names: (its URL, a dropper)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/") + "_live_bench"
    admin = urlunsplit(parts._replace(path="/postgres"))

    def run(sql):
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql)

    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}")), lambda: run(
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--lines", type=int, default=5000, help="per host")
    parser.add_argument("--rate", type=int, default=0,
                        help="lines/s for all hosts together (0: as fast as they print)")
    parser.add_argument("--parallel", type=int, default=200)
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--no-bare", action="store_true")
    parser.add_argument("--viewer", nargs=5, metavar=("URL", "COOKIE", "ORIGIN", "OUT", "READY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.viewer:
        asyncio.run(view(*args.viewer))
        return

    tmp = Path(tempfile.mkdtemp(prefix="opsplane-bench-live-"))
    os.environ["OPSPLANE_VAR_DIR"] = str(tmp / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "opsplane.settings"
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(tmp / "metrics"))
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    drop_database = None
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        os.environ["DATABASE_URL"], drop_database = scratch_database(os.environ["DATABASE_URL"])
    redis_server = None
    if not os.environ.get("REDIS_URL"):
        from opsplane.embedded_redis import EmbeddedRedis

        redis_server = EmbeddedRedis(tmp / "redis", persist=False).start()
        os.environ["REDIS_URL"] = redis_server.url
    import django

    django.setup()
    import changes_engine as shared
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from changes import output, services
    from changes.models import Runbook, RunOutput
    from opsplane import demo
    from opsplane import lab as lab_module
    from opsplane.testing.ssh import free_port

    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    call_command("migrate", verbosity=0)
    lab_server, inventory = shared.start_lab(args.hosts, tmp / "lab")
    port = free_port("127.0.0.1")
    env = dict(os.environ)
    web = subprocess.Popen([sys.executable, "-m", "uvicorn", "opsplane.asgi:application",
                            "--host", "127.0.0.1", "--port", str(port), "--log-level",
                            "warning", "--no-access-log"], cwd=ROOT, env=env)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "opsplane.celery", "worker", "-Q",
         "runs,celery", "--pool", "solo", "--loglevel", "WARNING", "--without-mingle",
         "--without-gossip"], cwd=ROOT, env=env)
    viewers = []
    try:
        demo.load(tmp / "logins.json", lab_inventory=tmp / "lab" / "inventory.json")
        users = get_user_model().objects
        admin, approver = users.get(username="admin"), users.get(username="approver")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        cmd = command(args.lines, args.rate, args.hosts)
        specs = lab_module.connection_specs(inventory)
        total = args.hosts * args.lines

        bare_rate = None
        if not args.no_bare:
            started = time.perf_counter()
            counted = asyncio.run(bare(specs, args.parallel, command(args.lines, 0, args.hosts)))
            bare_seconds = time.perf_counter() - started
            assert counted == total, counted
            bare_rate = total / bare_seconds

        runbook = services.save_runbook(
            Runbook(), name=f"bench-live-{time.monotonic_ns()}", description="", by=admin,
            definition=json.dumps({"steps": [{"name": "print", "kind": "shell",
                                              "command": cmd}]}))
        change = services.compose_change(title="bench live output", runbook=runbook,
                                         selector="", params={}, by=admin,
                                         strategy={"parallelism": args.parallel})
        services.submit_change(change, by=admin)
        if services.approval_problem(change):
            from approvals.testing import approve

            approve(change, by=approver)
        # Viewers connect before the run exists in the worker's eyes: start it, then
        # they join at once (the worker needs a moment to claim it and connect).
        client = Client()
        client.force_login(admin)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        run = services.start_run(change, by=admin)
        for i in range(args.viewers):
            out, ready = tmp / f"viewer-{i}.json", tmp / f"viewer-{i}.ready"
            viewers.append((out, subprocess.Popen([
                sys.executable, __file__, "--viewer",
                f"ws://127.0.0.1:{port}/ws/runs/{run.pk}/?after=0", cookie,
                f"http://127.0.0.1:{port}", str(out), str(ready)], cwd=ROOT, env=env)))
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert time.monotonic() < deadline, "the viewer did not connect"
                time.sleep(0.02)
        while True:
            run.refresh_from_db()
            if run.is_terminal:
                break
            time.sleep(0.05)
        worker_rss = rss_peak(worker.pid)
        for _, process in viewers:
            process.wait(120)
        results = [json.loads(out.read_text()) for out, _ in viewers]

        # Stored: every line once, in order.
        started = time.perf_counter()
        expected, stored_lines, stored_missing = 1, 0, 0
        first_at = None
        for event in output.iter_events(run.pk):
            if event[0] != expected:
                stored_missing += abs(event[0] - expected)
            count = output.line_count(event[4])
            expected = event[0] + count
            stored_lines += count
            first_at = event[5] if first_at is None else min(first_at, event[5])
        read_seconds = time.perf_counter() - started
        persist_seconds = run.finished_at.timestamp() - first_at
        # Compaction (the worker queued it): wait for it and read it back.
        deadline = time.monotonic() + 300
        while not RunOutput.objects.filter(run=run, compacted_at__isnull=False).exists():
            assert time.monotonic() < deadline, "not compacted"
            time.sleep(0.2)
        stats = RunOutput.objects.get(run=run)
        compact_seconds = (stats.compacted_at - run.finished_at).total_seconds()
        started = time.perf_counter()
        compact_lines = sum(output.line_count(e[4]) for e in output.iter_events(run.pk))
        compact_read = time.perf_counter() - started
    finally:
        for _, process in viewers:
            if process.poll() is None:
                process.kill()
        for process in (worker, web, lab_server):
            process.terminate()
            process.wait(30)
        if redis_server:
            redis_server.stop()

    ok_hosts = run.results.filter(state="ok").count()
    mode = f"paced to ~{args.rate:,} lines/s" if args.rate else "as fast as the hosts print"
    print(f"\n{args.hosts} lab hosts x {args.lines:,} lines = {total:,} lines ({mode}); "
          f"{database}, parallelism {args.parallel}, {args.viewers} viewer(s); "
          f"run {run.status}, {ok_hosts} hosts ok")
    rows = []
    if bare_rate:
        rows.append(("A bare asyncssh, read only (this machine)", f"{bare_rate:,.0f}", ""))
    rows.append(("B opsplane persisted (first line read -> run done)",
                 f"{stored_lines / persist_seconds:,.0f}",
                 f"{persist_seconds:.1f} s, {stored_lines:,} lines, {stored_missing} gaps"))
    for i, result in enumerate(results):
        seconds = result["last_recv"] - result["first_at"]
        hist = [tuple(x) for x in result["latencies"]]
        rows.append((f"B opsplane streamed to viewer {i + 1}", f"{result['lines'] / seconds:,.0f}",
                     f"{seconds:.1f} s; missing {result['missing']}, duplicated "
                     f"{result['duplicated']}; latency p50 {percentile(hist, 0.5)} ms, "
                     f"p99 {percentile(hist, 0.99)} ms, max {hist[-1][0]} ms"))
    rows.append(("reference: bare asyncssh (performance.md)", "~377,000", "2 cores, same lab"))
    rows.append(("reference: AWX job events (documented)", "~1,100", "4 CPUs"))
    width = max(len(r[0]) for r in rows)
    print(f"  {'':<{width}}  {'lines/s':>10}")
    for name, rate, note in rows:
        print(f"  {name:<{width}}  {rate:>10}  {note}")
    print(f"  worker peak RSS {worker_rss / 2**20:.0f} MiB; stored {stats.raw_bytes / 2**20:.1f} "
          f"MiB of text as {stats.stored_bytes / 2**20:.1f} MiB after compaction "
          f"({compact_seconds:.1f} s after the run); reading all back: {read_seconds:.1f} s "
          f"live, {compact_read:.1f} s compacted ({compact_lines:,} lines)")
    print("targets: >= 20,000 lines/s persisted and streamed; 0 missing, 0 duplicated; "
          "viewer p99 <= 250 ms")
    if drop_database:
        from django.db import connections

        connections.close_all()
        drop_database()


if __name__ == "__main__":
    main()
