"""The whole product as separate processes, for the users' journeys (tests/journeys/):
uvicorn (HTTP + websockets), a Celery worker and Celery beat, started like ``make run``
starts them (``opsplane/supervisor.py``), but pointed at the *test* database and the
suite's Redis.

No Django import at module level: the caller passes the database URL (the test
database's, see ``database_url``) and the processes inherit the rest of the test
session's environment (``OPSPLANE_VAR_DIR``, hence the same secret key and Fernet key,
``REDIS_URL``, ``PROMETHEUS_MULTIPROC_DIR``). Their output goes to one log file, every line
prefixed with the process' name; ``tail()`` is what a failed test prints.
"""

import os
import re
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from opsplane.supervisor import Supervisor, SupervisorError
from opsplane.testing.ssh import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60


class StackError(Exception):
    """A process of the stack did not start; the message carries its log."""


def database_url(settings_dict):
    """A ``DATABASE_URL`` for the database Django is connected to (the test database
    once pytest-django made it): PostgreSQL or a SQLite file."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        name = str(settings_dict["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise StackError("the test database lives in memory; other processes cannot "
                             "share it")
        return f"sqlite:///{quote(str(Path(name).resolve()))}"
    if engine.endswith("postgresql"):
        user = quote(settings_dict.get("USER") or "", safe="")
        password = settings_dict.get("PASSWORD") or ""
        auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
        host = settings_dict.get("HOST") or ""
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgresql://{auth}{host}{port}/{quote(settings_dict['NAME'], safe='')}"
    raise StackError(f"cannot hand database engine {engine} to other processes")


@dataclass
class Stack:
    url: str
    log: Path
    worker_name: str
    supervisor: Supervisor = field(repr=False)

    def tail(self, lines=200):
        """The last lines of every process' output (for a failed test's report), without
        the escalation ticks that found nothing to do (the journeys' stack ticks every
        second: they would fill the report)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(_without_idle_ticks(text.splitlines())[-lines:])

    def check_running(self):
        """Raise when a process of the stack died (a journey would only time out)."""
        dead = [f"{c.name} (exit {c.process.returncode})" for c in self.supervisor.children
                if not c.running]
        if dead:
            raise StackError(f"stack process(es) died: {', '.join(dead)}\n{self.tail(60)}")


@contextmanager
def run_stack(directory, *, database_url, env=None, concurrency=2):
    """Start web (uvicorn), worker and beat; yield a ``Stack``; stop them all (process
    groups, so pool children and shells go too) even when the body failed.

    Celery answers a ping only from this worker (its own node name), so a worker running
    inside the test process on the same broker cannot pass for it."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "stack.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    worker_name = f"journeys-{os.getpid()}@127.0.0.1"
    child_env = {
        "DATABASE_URL": database_url,
        "OPSPLANE_BASE_URL": url,
        "PYTHONUNBUFFERED": "1",
        # Small pools: web, two worker children and beat each hold their own.
        "DATABASE_POOL_MAX_SIZE": "4",
        **(env or {}),
    }
    out = _LogFile(log)
    supervisor = Supervisor(out=out, stop_timeout=10)
    python = sys.executable
    # The test process' own switches must not leak into the product's processes.
    saved = {name: os.environ.pop(name) for name in ("DJANGO_ALLOW_ASYNC_UNSAFE",)
             if name in os.environ}
    try:
        web = supervisor.start("web", [
            python, "-m", "uvicorn", "opsplane.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--no-server-header", "--log-level", "warning",
            "--lifespan", "off",
        ], env=child_env, cwd=REPO)
        worker = supervisor.start("worker", [
            python, "-m", "celery", "-A", "opsplane.celery", "worker", "--loglevel", "INFO",
            "--concurrency", str(concurrency), "--hostname", worker_name,
            "--without-mingle", "--without-gossip",
        ], env=child_env, cwd=REPO)
        supervisor.start("beat", [
            python, "-m", "celery", "-A", "opsplane.celery", "beat", "--loglevel", "INFO",
            "--schedule", str(directory / "celerybeat-schedule"),
        ], env=child_env, cwd=REPO)
        os.environ.update(saved)
        stack = Stack(url=url, log=log, worker_name=worker_name, supervisor=supervisor)
        try:
            supervisor.wait_until(
                lambda: urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200,  # noqa: S310
                what="the web server", timeout=START_TIMEOUT, child=web)
            from opsplane.celery import app

            supervisor.wait_until(
                lambda: bool(app.control.ping(destination=[worker_name], timeout=0.5)),
                what="the Celery worker", timeout=START_TIMEOUT, child=worker)
        except SupervisorError as exc:
            raise StackError(f"{exc}\n{stack.tail(80)}") from None
        yield stack
    finally:
        os.environ.update(saved)
        # Beat first (no new ticks), then the worker, then web: reverse start order.
        supervisor.stop_all()
        _purge_queues()
        time.sleep(0.1)  # the relay threads write the last lines
        out.close()


_TICK = re.compile(r"alerts\.escalate\[([^\]]+)\]")
_IDLE = "{'woken': 0, 'advanced': 0}"


def _without_idle_ticks(lines):
    """``lines`` without those of escalation ticks that advanced and woke nothing (beat
    sending one, the worker receiving it, its result)."""
    idle = {found.group(1) for line in lines
            if "succeeded" in line and line.rstrip().endswith(_IDLE)
            and (found := _TICK.search(line))}
    return [line for line in lines
            if "Sending due task alerts-escalate" not in line
            and not ((found := _TICK.search(line)) and found.group(1) in idle)]


def _purge_queues():
    """Beat ticks nobody consumed would reach a worker of a later test: drop them."""
    import contextlib

    from opsplane.celery import app

    with contextlib.suppress(Exception):
        app.control.purge()


class _LogFile:
    """The supervisor's output stream: a file that ignores writes once closed (a relay
    thread may still hold a last line when the stack is gone)."""

    def __init__(self, path):
        self._file = open(path, "w")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def write(self, text):
        with self._lock:
            if not self._file.closed:
                self._file.write(text)

    def flush(self):
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self):
        with self._lock:
            self._file.close()
