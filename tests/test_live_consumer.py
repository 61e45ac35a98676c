"""ws/runs/<id>/: the stored backlog, then live, through the real Redis channel layer and
a real worker; reconnecting in the middle loses and repeats nothing."""

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from live_support import (  # noqa: F401 - lab_inventory_fixture provides lab_inventory
    assert_numbered,
    event_lines,
    lab_inventory_fixture,
    make_change,
    stored_lines,
    wait_for,
)
from test_live_output import bare_run

from changes import live, services
from changes.models import OutputChunk, Run

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cr3t-Value"

SLOW = """
parameters:
  - name: token
    type: string
    secret: true
steps:
  - name: count
    kind: shell
    command: |
      echo "token {{ token }}"
      i=1
      while [ $i -le 60 ]; do echo "$OPSPLANE_LAB_HOST $i"; i=$((i+1)); sleep 0.03; done
"""


def _path(run_id, after=0):
    return f"/ws/runs/{run_id}/?after={after}"


async def _collect(communicator, *, min_lines=None, timeout=30, fresh=True):
    """Frames until ``end`` (or until ``min_lines`` lines came, backlog and live):
    (lines, frame types)."""
    lines, kinds = [], []
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.1, deadline - time.monotonic())
        message = await communicator.receive_json_from(timeout=left)
        kinds.append(message["type"])
        if message["type"] == "events":
            lines.extend(event_lines(message["events"]))
        if message["type"] == "end" or (
                min_lines and len(lines) >= min_lines and (not fresh or "caught_up" in kinds)):
            return lines, kinds


async def test_anonymous_outsiders_and_unknown_runs_are_refused(make_user, operator, websockets):
    run = await database_sync_to_async(bare_run)(operator, ["a"])
    communicator = await websockets(_path(run.pk))
    assert await communicator.connect() == (False, 4401)
    outsider = await database_sync_to_async(make_user)(None)
    communicator = await websockets(_path(run.pk), outsider)
    assert await communicator.connect() == (False, 4403)
    communicator = await websockets(_path(run.pk + 1000), operator)
    assert await communicator.connect() == (False, 4403)
    oncall = await database_sync_to_async(make_user)("oncall")
    communicator = await websockets(_path(run.pk), oncall)
    assert (await communicator.connect())[0]
    await communicator.disconnect()


async def test_backlog_then_live_with_a_reconnect_in_the_middle_and_two_viewers(
        celery_worker, lab_inventory, operator, approver, websockets):
    change = await database_sync_to_async(make_change)(
        operator, SLOW, "role=web", params={"token": SECRET}, approvers=[approver],
        parallelism=6)
    run = await database_sync_to_async(services.start_run)(change, by=operator)
    steady = await websockets(_path(run.pk), operator)
    assert (await steady.connect())[0]
    steady_task = asyncio.ensure_future(_collect(steady, timeout=60))
    # Another viewer comes once the run is under way, leaves, and comes back.
    while not await database_sync_to_async(OutputChunk.objects.filter(run=run).count)() > 5:
        await asyncio.sleep(0.05)
    first = await websockets(_path(run.pk), operator)
    assert (await first.connect())[0]
    before, kinds = await _collect(first, min_lines=40)
    assert kinds[0] == "hello" and "caught_up" in kinds
    await first.disconnect()
    again = await websockets(_path(run.pk, after=before[-1][0]), operator)
    assert (await again.connect())[0]
    after, kinds = await _collect(again, timeout=60)
    await again.disconnect()
    together = before + after
    assert_numbered(together)
    steady_lines, steady_kinds = await steady_task
    await steady.disconnect()
    assert steady_kinds[-1] == "end"
    stored = await database_sync_to_async(stored_lines)(run.pk)
    assert together == stored == steady_lines
    texts = [line[3] for line in stored]
    assert "token ********" in texts and not any(SECRET in text for text in texts)
    assert sum(1 for line in stored if line[2] == "stdout") == 6 * 61
    lag = [s.value for m in live.viewer_lag.collect() for s in m.samples
           if s.name.endswith("_count")]
    assert sum(lag) > 0  # live batches were timed from the worker's read to the viewer
    run = await database_sync_to_async(wait_for)(run)  # "end" comes just before the status
    assert run.status == Run.Status.SUCCEEDED


async def test_a_missing_live_batch_is_read_from_the_database(operator, websockets):
    run = await database_sync_to_async(bare_run)(operator, ["a"])
    communicator = await websockets(_path(run.pk), operator)
    assert (await communicator.connect())[0]
    assert [await communicator.receive_json_from() for _ in range(2)][1] == {
        "type": "caught_up", "seq": 0}

    @database_sync_to_async
    def write(seq, count):
        events = [(seq + i, "a", 0, "stdout", f"line {seq + i}\n", time.time())
                  for i in range(count)]
        OutputChunk.objects.bulk_create([
            OutputChunk(run=run, seq=s, seq_end=s, host_name=h, step=st, stream=sm, text=t,
                        at=at) for s, h, st, sm, t, at in events])
        return events

    events = await write(1, 10)
    await live.apublish_events(run.pk, events[5:])  # 1..5 were "lost" on the way
    lines, _ = await _collect(communicator, min_lines=10, fresh=False)
    assert [line[0] for line in lines] == list(range(1, 11))
    await live.apublish_events(run.pk, events)  # a repeat: nothing new
    assert await communicator.receive_nothing(timeout=0.3)
    await write(11, 2)  # written, never published
    await live.apublish_end(run.pk, 12)
    lines, kinds = await _collect(communicator)
    assert [line[0] for line in lines] == [11, 12] and kinds[-1] == "end"
    await communicator.disconnect()


async def test_a_quiet_run_keeps_its_viewers(operator, websockets):
    """Nothing printed for longer than the channel layer's blocking pop (5 s): the viewer
    gets ticks, stays connected, and the next line still arrives."""
    run = await database_sync_to_async(bare_run)(operator, ["a"])
    communicator = await websockets(_path(run.pk), operator)
    assert (await communicator.connect())[0]
    assert [await communicator.receive_json_from() for _ in range(2)][1]["type"] == "caught_up"
    tick = await communicator.receive_json_from(timeout=8)
    assert tick["type"] == "tick" and tick["seq"] == 0
    await asyncio.sleep(1.5)  # 6.5 s without a message in the group

    @database_sync_to_async
    def write():
        OutputChunk.objects.create(run=run, seq=1, seq_end=1, host_name="a", step=0,
                                   stream="stdout", text="awake\n", at=time.time())

    await write()
    await live.apublish_events(run.pk, [(1, "a", 0, "stdout", "awake\n", time.time())])
    lines, _ = await _collect(communicator, min_lines=1, fresh=False)
    assert lines == [(1, "a", "stdout", "awake")]
    await communicator.disconnect()
