"""The changes app's only caller of the channel layer: run groups, what is published to
them, and the output metrics that go with streaming.

The worker publishes each committed batch of output events (``changes/output.py``) with
``apublish_events``: a few group messages per batch, never one per line, each carrying a
ready-made websocket frame so that a consumer relays it without decoding it. When the
run's output is complete it publishes ``apublish_end``. Consumers (``changes.consumers``)
and the REST tail (``changes.api``) listen through ``subscribe``.

Live messages are a fast path, not the record: a viewer that finds a gap between what it
sent and a message's first seq (a message dropped by a full channel, expired while the
consumer was busy) reads the gap from the database, where every published line already is.
"""

import asyncio
import contextlib
import json
import logging
import time

from channels.layers import get_channel_layer
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from changes import output

logger = logging.getLogger(__name__)

# Characters of event text per group message (and so per websocket frame).
FRAME_TEXT = 256 << 10
# Seconds leaving a run's group may take (the REST tail's answer waits for it).
CLEANUP_SECONDS = 2.0

lines_published = Counter("opsplane_change_output_lines_total",
                          "Output lines written and published by workers.")
bytes_published = Counter("opsplane_change_output_bytes_total",
                          "Output characters written and published by workers.")
viewer_lag = Histogram(
    "opsplane_change_output_viewer_lag_seconds",
    "From a worker reading output to a websocket consumer sending it to a viewer (per "
    "live batch; its newest line).",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
viewers = Gauge("opsplane_change_output_viewers", "Open websocket viewers of run output.",
                multiprocess_mode="livesum")
publish_failures = Counter("opsplane_change_output_publish_failures_total",
                           "Output batches the worker could not publish (viewers read "
                           "them from the database instead).")


def run_group(run_id):
    return f"run.{run_id}"


def encode_events(events):
    """The websocket frame for events: ``{"type": "events", "events": [[seq, host, step,
    stream, text, at], ...]}``."""
    return json.dumps({"type": "events", "events": events}, separators=(",", ":"),
                      ensure_ascii=False)


def frames(events):
    """Split events (in seq order) into messages of at most about FRAME_TEXT characters:
    ``(first_seq, last_seq, newest_at, frame)``."""
    start, size = 0, 0
    for i, event in enumerate(events):
        size += len(event[4])
        if size >= FRAME_TEXT or i == len(events) - 1:
            batch = events[start:i + 1]
            yield (batch[0][0], output.last_seq_of(batch[-1]), max(e[5] for e in batch),
                   encode_events(batch))
            start, size = i + 1, 0


async def apublish_events(run_id, events):
    """Publish a committed batch of events (in seq order) to the run's viewers. Never
    raises: live delivery is best effort, the database is the record."""
    layer = get_channel_layer()
    lines = sum(output.line_count(event[4]) for event in events)
    lines_published.inc(lines)
    bytes_published.inc(sum(len(event[4]) for event in events))
    try:
        for first, last, at, frame in frames(events):
            await layer.group_send(run_group(run_id), {
                "type": "run.events", "first": first, "last": last, "at": at,
                "frame": frame})
    except Exception:  # Redis down or slow: viewers catch up from the database
        publish_failures.inc()
        logger.warning("run %s: could not publish output", run_id, exc_info=True)


async def apublish_end(run_id, last_seq):
    """Tell the run's viewers that its output is complete up to ``last_seq``."""
    try:
        await get_channel_layer().group_send(run_group(run_id), {
            "type": "run.end", "last": last_seq})
    except Exception:
        publish_failures.inc()
        logger.warning("run %s: could not publish the end of output", run_id, exc_info=True)


@contextlib.asynccontextmanager
async def subscribe(run_id):
    """Listen to a run's group outside a consumer (the REST tail): yields an async
    ``receive(timeout)`` that returns the next message, or None after ``timeout``
    seconds (or when Redis failed: the caller reads the database again either way)."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = run_group(run_id)
    await layer.group_add(group, channel)
    # One receive at a time, never cut short by a timeout (cancelling a channel layer's
    # read half-way breaks its connection): a wait that times out leaves it pending for
    # the next wait.
    pending = None

    async def receive(timeout):
        nonlocal pending
        if pending is None:
            pending = asyncio.ensure_future(layer.receive(channel))
        done, _ = await asyncio.wait({pending}, timeout=max(0.0, timeout))
        if not done:
            return None
        task, pending = pending, None
        try:
            return task.result()
        except Exception:  # Redis away: callers read the database again, a little later
            logger.warning("run %s: waiting for output failed", run_id, exc_info=True)
            await asyncio.sleep(min(1.0, max(0.0, timeout)))
            return None

    try:
        yield receive
    finally:
        # Bounded: the answer is complete, and a channel-layer read that is slow to
        # unwind (or Redis that does not answer) must not hold it. The group membership
        # expires by itself (the layer's group_expiry) should the discard not happen.
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending}, timeout=CLEANUP_SECONDS)
        try:
            await asyncio.wait_for(layer.group_discard(group, channel), CLEANUP_SECONDS)
        except (TimeoutError, OSError, RedisError):
            logger.warning("run %s: leaving the output group failed", run_id, exc_info=True)


def lag(at, now=None):
    return max(0.0, (now or time.time()) - at)
