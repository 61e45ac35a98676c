"""``manage.py up``: the whole product on one machine (what ``make run`` calls).

Embedded Redis (when ``REDIS_URL`` is unset), the SSH lab, migrations, demo data, then
web + worker + beat, under one supervisor; Ctrl-C stops all of it.
"""

import fcntl
import json
import os
import shutil
import signal
import sys
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from opsplane import startup
from opsplane.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from opsplane.env import env_int
from opsplane.supervisor import Supervisor, SupervisorError


class Command(BaseCommand):
    help = "Run web, worker, beat, the embedded Redis and the SSH lab until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("OPSPLANE_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=env_int("PORT", 8000, minimum=1,
                                                                   maximum=65535))
        parser.add_argument("--lab-hosts", type=int,
                            default=env_int("OPSPLANE_LAB_HOSTS", 10, minimum=0))
        parser.add_argument("--lab-base", default=os.environ.get("OPSPLANE_LAB_BASE",
                                                                 "127.0.10.1"))
        parser.add_argument("--lab-port", type=int,
                            default=env_int("OPSPLANE_LAB_PORT", 2222, minimum=1,
                                            maximum=65535))
        parser.add_argument("--concurrency", type=int, default=2,
                            help="Celery worker processes")
        parser.add_argument("--no-demo", action="store_true", help="skip loading demo data")

    def handle(self, *args, **options):
        var = settings.VAR_DIR
        var.mkdir(parents=True, exist_ok=True)
        lock = open(var / "up.lock", "w")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandError(
                f"opsplane is already running from {var} (see {var}/up.lock)"
            ) from None

        sup = Supervisor(out=self.stdout)

        def request_stop(signum, frame):
            if not sup.stopping.is_set():
                sup.log(f"opsplane | stopping (signal {signum})…")
            sup.stopping.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGHUP, request_stop)

        redis_server = None
        code = 0
        try:
            redis_server = self._start_redis(sup)
            child_env = self._child_env(var, redis_server)
            startup.check_services()
            sup.log("opsplane | migrating the database…")
            call_command("migrate", interactive=False, verbosity=0)
            if options["lab_hosts"]:
                self._start_lab(sup, options, child_env)
            if not options["no_demo"]:
                call_command("demo", verbosity=0)
            self._start_processes(sup, options, child_env)
            self._announce(sup, options)
            code = sup.watch()
        except (SupervisorError, EmbeddedRedisError, startup.StartupError) as exc:
            sup.log(f"opsplane | error: {exc}")
            code = 1
        finally:
            sup.stop_all()
            if redis_server is not None:
                redis_server.stop()
            sup.log("opsplane | stopped")
        sys.exit(code)

    def _start_redis(self, sup):
        if os.environ.get("REDIS_URL"):
            return None
        server = EmbeddedRedis(settings.EMBEDDED_REDIS_DIR, persist=True).start()
        sup.log(f"opsplane | embedded Redis on {server.socket}")
        return server

    def _child_env(self, var, redis_server):
        metrics_dir = var / "metrics"
        # Files of processes from an earlier run would be added up forever: start clean.
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = {
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "OPSPLANE_VAR_DIR": str(var),
            "PYTHONUNBUFFERED": "1",
        }
        # This process' metrics go to the same place as its children's.
        os.environ.update(env)
        return env

    def _start_lab(self, sup, options, env):
        inventory = settings.OPSPLANE_LAB_DIR / "inventory.json"
        inventory.unlink(missing_ok=True)
        lab = sup.start("lab", [
            sys.executable, "manage.py", "lab", "--hosts", str(options["lab_hosts"]),
            "--base", options["lab_base"], "--port", str(options["lab_port"]),
            "--dir", str(settings.OPSPLANE_LAB_DIR),
        ], env=env, cwd=settings.BASE_DIR)

        def ready():
            data = json.loads(inventory.read_text())
            return len(data["hosts"]) == options["lab_hosts"]

        sup.wait_until(ready, what="the SSH lab", timeout=60, child=lab)

    def _start_processes(self, sup, options, env):
        python = sys.executable
        web = sup.start("web", [
            python, "-m", "uvicorn", "opsplane.asgi:application",
            "--host", options["host"], "--port", str(options["port"]),
            "--no-server-header", "--log-level", "warning", "--lifespan", "off",
        ], env=env, cwd=settings.BASE_DIR)
        worker = sup.start("worker", [
            python, "-m", "celery", "-A", "opsplane.celery", "worker",
            "--loglevel", "INFO", "--concurrency", str(options["concurrency"]),
            "--hostname", "worker@%h", "--without-mingle", "--without-gossip",
        ], env=env, cwd=settings.BASE_DIR)
        sup.start("beat", [
            python, "-m", "celery", "-A", "opsplane.celery", "beat", "--loglevel", "INFO",
            "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"),
        ], env=env, cwd=settings.BASE_DIR)

        url = f"http://{options['host']}:{options['port']}/healthz"
        sup.wait_until(lambda: urllib.request.urlopen(url, timeout=2).status == 200,  # noqa: S310
                       what="the web server", timeout=60, child=web)
        from opsplane.celery import app

        sup.wait_until(lambda: bool(app.control.ping(timeout=1.0)),
                       what="the Celery worker", timeout=90, child=worker)

    def _announce(self, sup, options):
        host = options["host"]
        shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
        lines = ["", f"opsplane is running: http://{shown}:{options['port']}/", ""]
        logins = settings.VAR_DIR / "demo_logins.json"
        if logins.exists():
            lines.append(f"Demo logins (kept in {logins}):")
            for entry in json.loads(logins.read_text()):
                lines.append(f"  {entry['role']:<9} {entry['username']:<10} {entry['password']}")
        alerts = settings.VAR_DIR / "demo_alerts.json"
        if alerts.exists():
            demo = json.loads(alerts.read_text())
            if demo.get("path"):
                lines.append(f"Demo Alertmanager integration {demo['integration']} "
                             f"(kept in {alerts}), for an Alertmanager webhook_config:")
                lines.append(f"  intake URL: http://{shown}:{options['port']}{demo['path']}")
                lines.append(f"  or the bare URL with Authorization: Bearer {demo['token']}")
        if options["lab_hosts"]:
            lines.append(f"SSH lab: {options['lab_hosts']} hosts from {options['lab_base']} "
                         f"port {options['lab_port']} "
                         f"(inventory {settings.OPSPLANE_LAB_DIR / 'inventory.json'})")
        lines += ["Press Ctrl-C to stop everything.", ""]
        sup.log("\n".join(lines))
