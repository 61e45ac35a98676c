"""A small process supervisor for ``make run``: child processes, readiness, clean stop.

Each child runs in a process group of its own, so stopping it also stops what it
started (Celery's pool, the lab's shells). Children also get SIGTERM if the supervisor
itself dies (Linux ``PR_SET_PDEATHSIG``), so even ``kill -9`` of the supervisor leaves
nothing behind. No Django import: ``manage.py up`` wires it to the settings.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1


def die_with_parent():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc Linux: the process groups still get stopped normally
        pass


@dataclass
class Child:
    name: str
    argv: list
    env: dict = field(default_factory=dict)
    process: subprocess.Popen = None

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Start children in order, relay their output with a name prefix, and stop them
    all in reverse order when one dies or a stop is requested."""

    def __init__(self, *, out=sys.stdout, stop_timeout=15.0):
        self.children = []
        self.out = out
        self.stop_timeout = stop_timeout
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def log(self, message):
        with self._lock:
            self.out.write(message + "\n")
            self.out.flush()

    def start(self, name, argv, *, env=None, cwd=None):
        child = Child(name, list(argv), env or {})
        child.process = subprocess.Popen(
            child.argv,
            cwd=cwd,
            env={**os.environ, **child.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group; Ctrl-C reaches only us
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only async-signal-safe calls
        )
        self.children.append(child)
        threading.Thread(target=self._relay, args=(child,), daemon=True).start()
        return child

    def _relay(self, child):
        width = max(len(c.name) for c in self.children) if self.children else 6
        for raw in iter(child.process.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            self.log(f"{child.name:<{max(width, 6)}} | {line}")
        child.process.stdout.close()

    def wait_until(self, check, *, what, timeout, child=None):
        """Poll ``check()`` until true; raise when the child died or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stopping.is_set():
                raise SupervisorError("stopped while waiting for " + what)
            if child is not None and not child.running:
                raise SupervisorError(
                    f"{child.name} exited with status {child.process.returncode} "
                    f"before {what}; see its output above"
                )
            try:
                if check():
                    return
            except Exception:  # noqa: S110 - not ready yet; the deadline decides
                pass
            time.sleep(0.2)
        raise SupervisorError(f"timed out after {timeout:.0f} s waiting for {what}")

    def watch(self):
        """Block until a stop is requested or any child exits; returns the exit code."""
        while not self.stopping.wait(0.5):
            for child in self.children:
                if not child.running:
                    self.log(f"opsplane | {child.name} exited with status "
                             f"{child.process.returncode}; stopping everything")
                    return 1
        return 0

    def stop_all(self):
        self.stopping.set()
        for child in reversed(self.children):
            self._stop(child)

    def _stop(self, child):
        process = child.process
        if process is None:
            return
        if process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.log(f"opsplane | {child.name} did not stop in "
                         f"{self.stop_timeout:.0f} s; killing it")
        # The leader may be gone while members of its group linger (pool children).
        self._signal_group(process, signal.SIGKILL)
        process.wait()

    @staticmethod
    def _signal_group(process, sig):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


class SupervisorError(Exception):
    pass
