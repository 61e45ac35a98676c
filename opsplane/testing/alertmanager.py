"""A real Prometheus Alertmanager for tests (Debian's ``prometheus-alertmanager``), on
loopback, with clustering off and timers small enough for a test to watch an alert fire
and resolve in seconds.

``run_alertmanager(directory, receivers=...)`` writes ``alertmanager.yml`` with one route
to the first receiver, starts the server and waits for ``/-/ready``. ``Unavailable`` means
the binary is missing or does not start (fixtures turn it into
``opsplane.testing.require.unavailable``).
"""

import json
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from opsplane.testing.ssh import Unavailable, _stop, _tail, free_port

BINARIES = ("prometheus-alertmanager", "alertmanager")
START_TIMEOUT = 20


def _iso(moment):
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Alertmanager:
    url: str
    log: Path

    def post_alerts(self, alerts):
        """POST ``/api/v2/alerts`` as Prometheus does (a list of alerts)."""
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            assert response.status == 200, response.status

    def fire(self, labels, annotations=None, *, ends_in=timedelta(hours=1)):
        now = datetime.now(UTC)
        self.post_alerts([{"labels": labels, "annotations": annotations or {},
                           "startsAt": _iso(now), "endsAt": _iso(now + ends_in)}])

    def resolve(self, labels, annotations=None):
        """Send the alert again with an end in the past, as Prometheus does once the
        condition is gone: Alertmanager resolves it and tells its receivers."""
        now = datetime.now(UTC)
        self.post_alerts([{"labels": labels, "annotations": annotations or {},
                           "startsAt": _iso(now - timedelta(minutes=5)),
                           "endsAt": _iso(now - timedelta(seconds=1))}])

    def alerts(self):
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:  # noqa: S310
            return json.loads(response.read())


def config(receivers, *, group_by=("alertname", "instance"), group_wait="1s",
           group_interval="1s", repeat_interval="1h", resolve_timeout="1m"):
    """alertmanager.yml: every alert to the first of ``receivers`` (Alertmanager's own
    receiver dicts, e.g. the snippet opsplane shows when an integration is created)."""
    return {
        "global": {"resolve_timeout": resolve_timeout},
        "route": {"receiver": receivers[0]["name"], "group_by": list(group_by),
                  "group_wait": group_wait, "group_interval": group_interval,
                  "repeat_interval": repeat_interval},
        "receivers": receivers,
    }


def _binary():
    for name in BINARIES:
        if path := shutil.which(name):
            return path
    raise Unavailable("Prometheus Alertmanager not found "
                      "(Debian: apt-get install prometheus-alertmanager)")


@contextmanager
def run_alertmanager(directory, *, receivers, **timers):
    """Run Alertmanager on 127.0.0.1 and a free port; yield an ``Alertmanager``."""
    binary = _binary()
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config(receivers, **timers), sort_keys=False))
    port = free_port()
    log = directory / "alertmanager.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}",
             # No gossip on 0.0.0.0:9094: this one is alone, and loopback only.
             "--cluster.listen-address=", "--log.level=debug"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise Unavailable(f"Alertmanager exited with status {process.returncode}:\n"
                                  f"{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"Alertmanager not ready in {START_TIMEOUT}s:\n{_tail(log)}")
            time.sleep(0.1)
        yield Alertmanager(url=url, log=log)
    finally:
        if process.poll() is None:
            _stop(process, "Alertmanager")
