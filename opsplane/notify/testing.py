"""Test support: a local HTTP server standing in for the chat robots, webhooks and SMS
gateways. It records every request (method, path, query, headers, body, time) and
answers as programmed, including the providers' error bodies."""

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

OK_DINGTALK = (200, {"errcode": 0, "errmsg": "ok"})


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    target: str = ""  # the path and query exactly as sent
    at: float = field(default_factory=time.time)

    @property
    def json(self):
        return json.loads(self.body)


class FakeProvider:
    """``with FakeProvider() as robot:`` -> ``robot.url``, ``robot.requests``;
    ``robot.answer(200, {"errcode": 310000, "errmsg": "sign not match"})`` queues an
    answer for the next request (the default answer after that: ``robot.default``)."""

    def __init__(self, default=OK_DINGTALK):
        self.default = default
        self.requests = []
        self.delay = 0.0
        self._answers = deque()
        self._lock = threading.Lock()
        self._server = None

    def answer(self, status, body, *, times=1):
        with self._lock:
            self._answers.extend([(status, body)] * times)

    @property
    def url(self):
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait_for(self, count, timeout=20.0):
        """Wait until ``count`` requests arrived; the requests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)}")

    def _handle(self, handler):
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        with self._lock:
            self.requests.append(Recorded(
                handler.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                {k.lower(): v for k, v in handler.headers.items()}, body, handler.path))
            status, answer = self._answers.popleft() if self._answers else self.default
        if self.delay:
            time.sleep(self.delay)
        data = answer if isinstance(answer, bytes) else (
            answer.encode() if isinstance(answer, str) else json.dumps(answer).encode())
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json" if isinstance(answer, dict)
                            else "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def __enter__(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                provider._handle(self)

            do_GET = do_PUT = do_POST  # noqa: N815

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def make_channel(kind, *, name=None, url="", signing_secret="", token="", config=None,
                 **fields):
    """A channel written straight to the database (tests of delivery; the form and the
    API go through ``services.save_channel``)."""
    from opsplane import secrets
    from opsplane.notify.models import Channel

    secret = {k: v for k, v in {"url": url, "signing_secret": signing_secret,
                                "token": token}.items() if v}
    return Channel.objects.create(
        name=name or f"{kind}-{Channel.objects.count() + 1}", kind=kind,
        config=config or {}, secret=secrets.encrypt(secret) if secret else "",
        secret_fields=sorted(secret), **fields)


def clear_budgets():
    """Forget every channel's recorded sends and queued flushes (Redis)."""
    from opsplane.notify import budget

    client = budget.client()
    keys = list(client.scan_iter("opsplane:notify:*"))
    if keys:
        client.delete(*keys)


def deliver_outbox():
    """Deliver every waiting outbox row now, in this thread (as the worker would);
    returns the rows, oldest first, as they are after the attempt."""
    from opsplane.notify import services
    from opsplane.notify.models import Notification

    rows = list(Notification.objects.filter(state__in=Notification.WAITING).order_by("id"))
    for row in rows:
        services.deliver(row.pk)
    return [Notification.objects.get(pk=row.pk) for row in rows]
