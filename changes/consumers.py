"""``ws/runs/<run_id>/?after=<seq>``: a run's output, the stored backlog then live.

Frames to the client (JSON text):

- ``{"type": "hello", "now": <server time>, "after": <seq>}`` first;
- ``{"type": "events", "events": [[seq, host, step, stream, text, at], ...]}`` in seq
  order, each line exactly once (see ``changes/output.py`` for what an event is);
- ``{"type": "caught_up", "seq": n}`` once the stored backlog is sent;
- ``{"type": "tick", "now": ..., "seq": n}`` every few seconds (the client can tell a
  quiet run from a dead socket);
- ``{"type": "end", "seq": n}`` when the run is over and everything was sent.

The client may send ``{"type": "ping"}`` (answered with ``pong``). It keeps the last seq
it got and reconnects with ``?after=`` that seq.

No gap and no duplicate: the consumer joins the run's group *first*, so live batches
published from then on wait in its channel while it reads the backlog from the database
(the worker publishes a batch only after committing it, so anything not yet in the
database is still to be published and will arrive). It then relays live batches, dropping
lines it already sent and reading from the database any lines a batch skips (a message
the channel layer dropped or expired). Viewers write nothing.
"""

import asyncio
import functools
import json
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import close_old_connections

from changes import live, output, services
from changes.models import Run

BACKLOG_LINES = 5000
TICK_SECONDS = 5.0


def _parse_after(scope):
    values = parse_qs(scope.get("query_string", b"").decode()).get("after", ["0"])
    try:
        return max(0, int(values[-1]))
    except ValueError:
        return None


def _db(function):
    """``database_sync_to_async`` that also lets the connection go when done. Django keeps
    connections per context, and the calls run in this consumer's: the clean-up of
    ``database_sync_to_async`` itself runs outside it and would leave it open."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return database_sync_to_async(call)


@_db
def _access(user, run_id):
    """(may the user watch this run, is the run over) for an existing run, else None."""
    run = Run.objects.select_related("change").filter(pk=run_id).first()
    if run is None or not services.can_view(user, run.change):
        return None
    return run.is_terminal


_read_after = _db(output.read_after)


@_db
def _is_terminal(run_id):
    return Run.objects.filter(pk=run_id, status__in=Run.TERMINAL).exists()


class RunOutputConsumer(AsyncWebsocketConsumer):
    group = None
    ended = False
    ticker = None

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        after = _parse_after(self.scope)
        terminal = await _access(user, self.run_id)
        if terminal is None or after is None:
            await self.close(code=4403 if after is not None else 4400)
            return
        # Join first: everything published from now on waits in our channel.
        self.group = live.run_group(self.run_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        live.viewers.inc()
        self.sent = after
        await self._send_json({"type": "hello", "now": time.time(), "after": after})
        # Whether the run was over is known from before the backlog is read: then the
        # backlog is everything.
        await self._send_stored()
        await self._send_json({"type": "caught_up", "seq": self.sent})
        if terminal:
            await self._end()
        else:
            self.ticker = asyncio.ensure_future(self._tick())

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            live.viewers.dec()
            self.group = None
        if self.ticker is not None:
            self.ticker.cancel()

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data or "{}")
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "ping":
            await self._send_json({"type": "pong", "now": time.time()})

    # --- group messages ------------------------------------------------------------------

    async def run_events(self, message):
        first, last = message["first"], message["last"]
        if self.ended or last <= self.sent:
            return
        if first > self.sent + 1:
            await self._send_stored(until=first - 1)  # a batch went missing: read it
            if last <= self.sent:
                return
        if first <= self.sent:
            events = json.loads(message["frame"])["events"]
            events = [e for e in (output.trim_after(tuple(e), self.sent) for e in events) if e]
            frame = live.encode_events(events)
        else:
            frame = message["frame"]
        await self.send(text_data=frame)
        self.sent = last
        if events_at := message.get("at"):
            live.viewer_lag.observe(live.lag(events_at))

    async def run_end(self, message):
        if not self.ended:
            await self._send_stored(until=message["last"])
            await self._end()

    async def run_tick(self, message):
        if self.ended:
            return
        if await _is_terminal(self.run_id):
            # The end message can be missed (published just before we joined): the run's
            # status says it too, and every line is stored by then.
            await self._send_stored()
            await self._end()
            return
        await self._send_json({"type": "tick", "now": time.time(), "seq": self.sent})

    # --- helpers ----------------------------------------------------------------------------

    async def _tick(self):
        while True:
            await asyncio.sleep(TICK_SECONDS)
            await self.channel_layer.send(self.channel_name, {"type": "run.tick"})

    async def _send_stored(self, until=None):
        """Send stored events after ``self.sent`` (up to about ``until``) in pages."""
        while until is None or self.sent < until:
            page = await _read_after(self.run_id, self.sent, limit=BACKLOG_LINES)
            if not page:
                return
            await self.send(text_data=live.encode_events(page))
            self.sent = output.last_seq_of(page[-1])

    async def _end(self):
        self.ended = True
        if self.ticker is not None:
            self.ticker.cancel()
        await self._send_json({"type": "end", "seq": self.sent})

    async def _send_json(self, content):
        await self.send(text_data=json.dumps(content))
