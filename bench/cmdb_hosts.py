"""Benchmark: the host list with 10,000 hosts, over HTTP, from one client.

    .venv/bin/python bench/cmdb_hosts.py [--hosts 10000] [--requests 300]

Creates the hosts in a fresh database (a temporary SQLite file, or DATABASE_URL when
set: it must name a database you can throw away), starts uvicorn on a free loopback
port, and times sequential requests on one keep-alive connection:

- the API: GET /api/v1/hosts/?selector=env=prod,role=web,zone=a&limit=50
- the HTML page: GET /inventory/?selector=... (50 rows)
- selector resolution: the number of SQL queries for a nested-group selector

Targets (issue 3): API median < 25 ms and p99 < 60 ms; page median < 60 ms; one query.
Baseline (reference/performance.md): NetBox 4.6.8 API p50 95 ms / p99 570 ms, its HTML
page p50 208 ms, for a filtered page of 50 out of 10,000 hosts.
"""

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def populate(count):
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from cmdb.models import Environment, Group, Host, Service
    from opsplane import tokens
    from opsplane.roles import ensure_role_groups

    envs = [Environment.objects.create(name=n, protected=n == "prod")
            for n in ("dev", "staging", "prod")]
    regions = [Group.objects.create(name=f"region-{r}") for r in ("sh", "bj", "gz")]
    roles = {}
    for role in ("web", "db", "cache", "api"):
        roles[role] = Group.objects.create(name=role)
        roles[role].parents.set(regions)
    hosts = []
    role_names = list(roles)
    for i in range(count):
        role = role_names[i % 4]
        hosts.append(Host(
            name=f"{role}-{i:05d}", address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            environment=envs[i % 3],
            labels={"role": role, "zone": "abc"[i // 3 % 3], "rack": f"r{i % 40}",
                    **({"canary": "true"} if i % 50 == 0 else {})},
        ))
    Host.objects.bulk_create(hosts, batch_size=1000)
    through = Host.groups.through
    through.objects.bulk_create(
        [through(host_id=h.pk, group_id=roles[h.labels["role"]].pk) for h in hosts],
        batch_size=2000)
    service = Service.objects.create(name="storefront")
    service.hosts.set([h.pk for h in hosts[::7]])

    user = get_user_model().objects.create_user("bench", password="bench password 1")
    user.groups.add(ensure_role_groups()["operator"])
    _, token = tokens.create_token(user, "bench", by=user)
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return token, session.session_key


def timed(conn, path, headers, count):
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        samples.append((time.perf_counter() - start) * 1000)
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}: {body[:300]!r}")
    return samples, body


def report(name, samples, target):
    samples = sorted(samples)
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"{name:<34} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   ({len(samples)} requests)"
          f"   target: {target}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="opsplane-bench-")
    os.environ.setdefault("OPSPLANE_VAR_DIR", tmp)
    os.environ["DJANGO_SETTINGS_MODULE"] = "opsplane.settings"
    from opsplane.embedded_redis import EmbeddedRedis

    redis_server = None
    if not os.environ.get("REDIS_URL"):
        redis_server = EmbeddedRedis(Path(tmp) / "redis", persist=False).start()
        os.environ["REDIS_URL"] = redis_server.url

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from cmdb import selectors

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    token, session_key = populate(args.hosts)
    print(f"database: {connection.vendor}; {args.hosts} hosts created in "
          f"{time.perf_counter() - started:.1f} s")

    with CaptureQueriesContext(connection) as queries:
        matched = len(list(selectors.resolve("group=region-sh,role=web,zone=a,!canary")))
    print(f"selector resolution: {len(queries)} query for {matched} hosts   target: 1")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "opsplane.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--lifespan", "off"],
        cwd=ROOT, env={**os.environ, "ALLOWED_HOSTS": "127.0.0.1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("uvicorn did not start") from None
                time.sleep(0.2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        selector = "env%3Dprod%2Crole%3Dweb%2Czone%3Da"
        api = f"/api/v1/hosts/?selector={selector}&limit=50"
        page = f"/inventory/?selector={selector}"
        auth = {"Authorization": f"Bearer {token}"}
        cookie = {"Cookie": f"sessionid={session_key}"}
        timed(conn, api, auth, 20)  # warm-up
        timed(conn, page, cookie, 20)
        samples, body = timed(conn, api, auth, args.requests)
        assert b'"count":0' not in body, body[:200]
        report("API host list (50 of 10,000)", samples, "p50 < 25 ms, p99 < 60 ms")
        samples, body = timed(conn, page, cookie, args.requests)
        rows = body.count(b'<td><a href="/inventory/hosts/')
        assert rows == 50, (rows, len(body), body[-600:])
        report("HTML host list (50 rows)", samples, "p50 < 60 ms")
        print("baseline: NetBox 4.6.8 API p50 95 ms / p99 570 ms; HTML p50 208 ms")
    finally:
        server.terminate()
        server.wait(10)
        if redis_server:
            redis_server.stop()


if __name__ == "__main__":
    main()
