"""Helpers for the alerts tests (and the bench): integrations, payloads, and a local
HTTP server standing in for a notification endpoint. Imported by tests/test_alerts_*.py.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "alertmanager"
GO_ZERO = "0001-01-01T00:00:00Z"


def fixture(name):
    """A captured Alertmanager payload from ``../shared/fixtures/alertmanager``."""
    return json.loads((FIXTURES / name).read_text())


def fixture_names():
    return sorted(p.name for p in FIXTURES.glob("webhook-v4-*.json"))


def make_integration(by, *, name="am", kind="alertmanager", secret="", **fields):
    from alerts import services
    from alerts.models import Integration

    data = {"name": name, "kind": kind, "enabled": True, "heartbeat_minutes": 0,
            "resolve_timeout_minutes": 0, "hmac_timestamp_header": "", **fields}
    return services.save_integration(Integration(), data, hmac_secret=secret, by=by)


def am_alert(labels, *, status="firing", starts_at="2026-01-01T00:00:00Z", ends_at=GO_ZERO,
             annotations=None, **extra):
    return {"status": status, "labels": labels, "annotations": annotations or {},
            "startsAt": starts_at, "endsAt": ends_at, "generatorURL": "", **extra}


def am_payload(alerts, **extra):
    return {"version": "4", "status": "firing", "receiver": "opsplane", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
            "groupKey": "{}:{}", "truncatedAlerts": 0, "alerts": alerts, **extra}


def post(client, token, payload, *, path_token=True, **headers):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if path_token:
        url = f"/api/v1/alerts/intake/{token}/"
    else:
        url = "/api/v1/alerts/intake/"
        headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {token}")
    return client.generic("POST", url, body, content_type="application/json", **headers)


class Recorder:
    """A local HTTP server that records what it receives and answers like a webhook
    receiver (200 ``{"ok": true}``), or with ``status``/``body`` set by the test."""

    def __init__(self):
        self.requests = []
        self.status, self.body = 200, b'{"ok": true}'
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": self.rfile.read(length)})
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(recorder.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def json(self):
        return [json.loads(r["body"]) for r in self.requests]


def webhook_channel(name, url, by):
    from opsplane.notify.models import Channel
    from opsplane.notify.services import save_channel

    return save_channel(Channel(), {"name": name, "kind": "webhook", "config": {},
                                    "rate_budget": "none"},
                        secret_fields={"url": url}, by=by)


