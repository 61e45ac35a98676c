"""Real SSH servers for tests: OpenSSH ``sshd`` and the asyncssh lab, on loopback only.

Both context managers raise ``Unavailable`` when the server cannot be started at all (no
sshd binary, a lab that dies at start-up); fixtures turn that into
``opsplane.testing.require.unavailable``. Failing to stop is an ordinary error.
"""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from opsplane.ssh import ConnectionSpec

REPO = Path(__file__).resolve().parents[2]
SSHD_SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/sbin"
# Far from the default lab (127.0.10.1), so tests can run while `make run` serves one.
TEST_LAB_BASE = "127.0.77.1"
START_TIMEOUT = 15


class Unavailable(Exception):
    """The server could not be started here; the message says why."""


@dataclass(frozen=True)
class SSHD:
    host: str
    port: int
    username: str
    client_key: str
    host_key: str
    log: Path

    def spec(self):
        """A ConnectionSpec for this server, with its host key pinned."""
        return ConnectionSpec(
            host=self.host,
            port=self.port,
            username=self.username,
            client_keys=[self.client_key],
            host_keys=[self.host_key],
            name="sshd",
        )


def free_port(address="127.0.0.1"):
    # Another process may take the port before the server binds it; the window is small
    # and a clash shows up as a start-up error naming the port.
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _tail(path, lines=20):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _keygen(path):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True, capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().split()[:2]


def _wait_for_banner(process, host, port, log, deadline):
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"sshd exited with status {process.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise Unavailable(f"sshd did not answer on {host}:{port} in {START_TIMEOUT}s:\n{_tail(log)}")


def _stop(process, name):
    """SIGTERM, as an operator would; a process still there 10 seconds later is a bug."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(f"{name} ignored SIGTERM for 10s and was killed") from None


@contextmanager
def start_sshd(directory=None):
    """Run OpenSSH ``sshd -D -e`` on 127.0.0.1 and a free port; yield an ``SSHD``.

    Its config, host key and authorized client key are generated in ``directory`` (a
    temporary one when None). Only that client key logs in, as the current user.
    """
    # sshd lives in an sbin directory, often not on a non-root PATH.
    sshd = shutil.which("sshd", path=f"{SSHD_SEARCH_PATH}:{os.environ.get('PATH', '')}")
    if sshd is None or shutil.which("ssh-keygen") is None:
        raise Unavailable(
            "OpenSSH sshd or ssh-keygen not found (Debian: apt-get install openssh-server)"
        )
    with tempfile.TemporaryDirectory(prefix="opsplane-sshd-") as tmp:
        path = Path(directory or tmp).resolve()
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # sshd running as root insists on its privilege separation directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        host_key = " ".join(_keygen(path / "host_key"))
        client_public = " ".join(_keygen(path / "client_key"))
        (path / "authorized_keys").write_text(client_public + "\n")
        port = free_port()
        config = path / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{port}\n"
            f"HostKey {path / 'host_key'}\n"
            f"AuthorizedKeysFile {path / 'authorized_keys'}\n"
            f"PidFile {path / 'sshd.pid'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            # The key files live in a temporary directory whose modes sshd would reject.
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\n"
            # Tests open many connections at once; the defaults drop some of them.
            "MaxStartups 200\n"
            "MaxSessions 100\n"
        )
        log = path / "sshd.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_banner(process, "127.0.0.1", port, log, time.monotonic() + START_TIMEOUT)
            yield SSHD(
                host="127.0.0.1",
                port=port,
                # The account sshd will log in, whatever $USER says.
                username=pwd.getpwuid(os.geteuid()).pw_name,
                client_key=str(path / "client_key"),
                host_key=host_key,
                log=log,
            )
        finally:
            _stop(process, "sshd")


def _wait_for_inventory(process, inventory_path, log, deadline):
    # A previous lab's inventory may still be there: only ours carries our pid.
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"the lab exited with status {process.returncode}:\n{_tail(log)}")
        try:
            inventory = json.loads(inventory_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            inventory = None
        if inventory and inventory.get("pid") == process.pid:
            return inventory
        time.sleep(0.05)
    raise Unavailable(f"the lab was not ready within {START_TIMEOUT}s:\n{_tail(log)}")


@contextmanager
def run_lab(count, directory, *, base=TEST_LAB_BASE, port=None, delay=0.0):
    """Run ``manage.py lab`` in a subprocess; yield its parsed inventory.

    On exit the lab gets SIGTERM and must exit cleanly (status 0) within 10 seconds.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port(base)
    log = directory / "lab.log"
    argv = [
        sys.executable, str(REPO / "manage.py"), "lab", "--hosts", str(count),
        "--dir", str(directory), "--base", base, "--port", str(port), "--delay", str(delay),
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        inventory = _wait_for_inventory(
            process, directory / "inventory.json", log, time.monotonic() + START_TIMEOUT
        )
    except BaseException:
        process.kill()
        process.wait()
        raise
    try:
        yield inventory
    finally:
        _stop(process, "the lab")
        if process.returncode != 0:
            raise RuntimeError(
                f"the lab exited with status {process.returncode} on SIGTERM:\n{_tail(log)}"
            )
