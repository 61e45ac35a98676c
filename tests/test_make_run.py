"""`make run` itself, as a developer uses it on a fresh checkout: embedded defaults
(SQLite, embedded Redis), the lab, web + worker + beat; Ctrl-C leaves nothing behind."""

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes_with(marker):
    """PIDs of processes whose environment contains ``marker`` (our unique var dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


class MakeRun:
    def __init__(self, var_dir, port, lab_port):
        self.var_dir, self.port, self.lab_port = var_dir, port, lab_port
        self.lines = []
        env = {k: v for k, v in os.environ.items()
               if k not in {"DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR",
                            "DATABASE_POOL_MAX_SIZE", "MAKEFLAGS", "MFLAGS"}}
        env.update(OPSPLANE_VAR_DIR=str(var_dir), PORT=str(port),
                   OPSPLANE_LAB_BASE="127.0.66.1", OPSPLANE_LAB_PORT=str(lab_port))
        # A session of its own, as a terminal's foreground job: Ctrl-C is SIGINT to it.
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "run"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, text, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear; output:\n{self.output[-4000:]}")

    def ctrl_c(self, timeout=60):
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)

    def logins(self):
        return dict(re.findall(r"^\s+\w+\s+(\w+)\s+(\S+)$", self.output, re.M))


def _login(base, username, password):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrfmiddlewaretoken": token}).encode()
    opener.open(urllib.request.Request(f"{base}/login/", data=data,
                                       headers={"Referer": f"{base}/login/"}), timeout=10)
    return opener


def test_make_run_serves_logs_in_and_stops_cleanly(tmp_path):
    var_dir = tmp_path / "var"
    port, lab_port = _free_port(), _free_port()
    base = f"http://127.0.0.1:{port}"

    run = MakeRun(var_dir, port, lab_port)
    try:
        run.wait_for("Press Ctrl-C to stop everything.")
        assert f"opsplane is running: {base}/" in run.output
        logins = run.logins()
        assert set(logins) == {"operator", "approver", "oncall", "admin"}

        with urllib.request.urlopen(f"{base}/login/", timeout=10) as page:
            assert page.status == 200

        # Demo users log in; the admin's System page shows the worker answering.
        admin = _login(base, "admin", logins["admin"])
        system = admin.open(f"{base}/system/", timeout=20).read().decode()
        assert re.search(r'id="workers">worker@', system), system

        operator = _login(base, "operator", logins["operator"])
        home = operator.open(f"{base}/", timeout=10).read().decode()
        assert ">operator<" in home and "/changes/" in home
        hosts = operator.open(f"{base}/inventory/?selector=role%3Dweb", timeout=10).read()
        assert b"lab-001" in hosts and b"6 hosts" in hosts

        # The lab is up: ten hosts in the inventory, the first one speaks SSH.
        inventory = json.loads((var_dir / "lab" / "inventory.json").read_text())
        assert len(inventory["hosts"]) == 10
        first = inventory["hosts"][0]
        with socket.create_connection((first["address"], first["port"]), timeout=5) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-")

        # A second `make run` on the same var/ refuses to start beside the first.
        second = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "manage.py", "up", "--port", str(_free_port())],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env=run_env(var_dir),
        )
        assert second.returncode != 0
        assert "already running" in second.stderr
    finally:
        code = run.ctrl_c()
    # make itself dies of the SIGINT (-2) or reports it (2, 130): all mean Ctrl-C
    assert code in (0, 2, 130, -signal.SIGINT), run.output[-3000:]
    assert "opsplane | stopped" in run.output
    time.sleep(1)
    assert _processes_with(f"OPSPLANE_VAR_DIR={var_dir}") == [], "processes left behind"
    secret = (var_dir / "secret_key").read_text()

    # A second run reuses var/: same secret key, same demo logins, data kept.
    again = MakeRun(var_dir, port, lab_port)
    try:
        again.wait_for("Press Ctrl-C to stop everything.")
        assert again.logins() == logins
    finally:
        again.ctrl_c()
    assert (var_dir / "secret_key").read_text() == secret
    time.sleep(1)
    assert _processes_with(f"OPSPLANE_VAR_DIR={var_dir}") == [], "processes left behind"


def run_env(var_dir):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"}}
    env["OPSPLANE_VAR_DIR"] = str(var_dir)
    return env
