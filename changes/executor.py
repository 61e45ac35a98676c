"""The Django side of a run: builds the engine's inputs from the database, runs the engine
in the worker, and writes what it reports back in small batches.

The engine (``changes/engine.py``) knows nothing of Django. Everything it reports goes
through ``DatabaseSink``, which buffers in memory; one flusher coroutine writes the
buffer every ``FLUSH_INTERVAL`` seconds from a single database thread (output events
with their sequence numbers, host states), then publishes the batch to the run's channel
group, beats the run's heartbeat and polls for a cancel request, so the event loop never
waits on the database. Output events are described in ``changes/output.py``.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from changes import engine, live, metrics, output, services, tasks
from changes.models import HostResult, OutputChunk, Run
from cmdb import services as cmdb_services
from opsplane import secrets as vault

logger = logging.getLogger(__name__)

# Output reaches the database and viewers in batches this far apart (plus the write).
FLUSH_INTERVAL = 0.05
CANCEL_POLL_EVERY = 0.25
HEARTBEAT_EVERY = timedelta(seconds=5)
# Output kept per host; beyond it a host's output is counted but not stored.
HOST_OUTPUT_LIMIT = 64 << 20
# An event's text is cut (at a line end when there is one) to at most this many characters,
# which bounds rows, channel messages and websocket frames.
EVENT_TEXT_MAX = 64 << 10


def execute(run_id):
    """Claim and run one run; returns the finished Run (None when it was not ours)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    run = services.claim_run(run_id, worker)
    if run is None:
        logger.info("run %s: already claimed or cancelled; nothing to do", run_id)
        return None
    # What runs must be what was approved: the digest is checked again here, before any
    # host is touched (approvals).
    if problem := services.approval_problem(run.change):
        logger.warning("run %s refused: %s", run_id, problem)
        with transaction.atomic():
            run.refresh_from_db()
            run.results.exclude(state__in=HostResult.DONE).update(
                state=HostResult.State.SKIPPED, error_reason="approval",
                error=f"not run: {problem}", finished_at=timezone.now())
            run = services.finish_run(run, Run.Status.FAILED, source=worker,
                                      aborted_reason=f"refused: {problem}")
        metrics.observe_finished(run)
        return run
    try:
        targets, steps, strategy, params, secrets = build_inputs(run)
        outcome = asyncio.run(_execute(run, targets, steps, strategy, params, secrets))
    except Exception:
        # Anything unexpected: the run ends interrupted, its hosts unknown; never silent.
        logger.exception("run %s failed in the worker", run_id)
        with transaction.atomic():
            run.refresh_from_db()
            if not run.is_terminal:
                services.finish_run(run, Run.Status.INTERRUPTED, source=worker,
                                    aborted_reason="the worker hit an internal error")
        raise
    with transaction.atomic():
        run.refresh_from_db()
        status, reason = final_status(run, outcome)
        run = services.finish_run(run, status, source=worker, aborted_reason=reason)
    metrics.observe_finished(run)
    return run


def final_status(run, outcome):
    if run.cancel_requested_at is not None or outcome.cancelled:
        return Run.Status.CANCELLED, ""
    bad = run.results.filter(state__in=[HostResult.State.FAILED, HostResult.State.UNREACHABLE,
                                        HostResult.State.UNKNOWN]).exists()
    if outcome.aborted or bad:
        return Run.Status.FAILED, outcome.abort_reason or ""
    return Run.Status.SUCCEEDED, ""


def build_inputs(run):
    """The engine's targets, steps, strategy, parameters and secrets for ``run``.
    Credentials are decrypted here, in the worker, for this run only."""
    change = run.change
    version = change.runbook_version
    results = run.results.select_related("host__credential", "host__environment") \
        .prefetch_related("host__host_keys").order_by("id")
    targets, secrets = [], set()
    for result in results:
        host = result.host
        if host is None:
            targets.append(engine.Target(name=result.host_name, spec=None,
                                         error="the host was deleted from the inventory",
                                         error_reason="inventory"))
            continue
        if not host.enabled:
            targets.append(engine.Target(name=host.name, spec=None, labels=host.labels,
                                         facts=host.facts, error_reason="inventory",
                                         error="the host is disabled in the inventory"))
            continue
        try:
            spec = cmdb_services.connection_spec(host)
        except vault.SecretUnreadable as exc:
            targets.append(engine.Target(name=host.name, spec=None, labels=host.labels,
                                         facts=host.facts, error=str(exc),
                                         error_reason="credential"))
            continue
        for secret in (spec.password, spec.passphrase):
            if secret:
                secrets.add(secret)
        targets.append(engine.Target(name=host.name, spec=spec, labels=host.labels,
                                     facts=host.facts))
    secret_params = services.secret_values(change)
    secrets.update(str(v) for v in secret_params.values() if v not in (None, ""))
    params = {**change.params, **secret_params}
    steps = [engine.Step(**step) for step in version.steps]
    strategy = engine.Strategy(**{**change.strategy, "check_mode": run.check_mode})
    return targets, steps, strategy, params, sorted(secrets)


async def _execute(run, targets, steps, strategy, params, secrets):
    cancel = asyncio.Event()
    sink = DatabaseSink(run)
    flusher = asyncio.create_task(sink.flush_forever(cancel))
    try:
        return await engine.execute(targets, steps, strategy, params=params, secrets=secrets,
                                    sink=sink, cancel=cancel)
    finally:
        try:
            await sink.stop(flusher)
        finally:
            sink.close()


class _Segment:
    """Consecutive text of one host, step and stream, not yet numbered."""

    __slots__ = ("step", "stream", "parts", "at", "held")

    def __init__(self, step, stream, text, at):
        self.step, self.stream, self.parts, self.at = step, stream, [text], at
        self.held = False  # an unfinished line kept back by the previous flush


class DatabaseSink:
    """Keeps what the engine reports in memory and writes it in batches.

    Output is buffered per host as segments (consecutive text of one step and stream).
    Each flush numbers the buffered lines (``seq``, gap-free per run), writes them as
    ``OutputChunk`` rows and the host states in one transaction, and then publishes the
    same events to the run's channel group (``changes.live``): publishing after the
    commit is what lets a viewer read the backlog and then follow live without a gap.
    A line still unfinished at a flush waits for the next one (then goes as it is), so
    lines are not split in two by batching.
    """

    def __init__(self, run):
        self.run = run
        self.pending = {}  # host name -> {field: value}
        self.segments = {}  # host name -> [_Segment], in order
        self.sizes = {}  # host name -> characters of output kept
        self.seq = 0  # the last number given out
        self.beat_at = timezone.now()
        self.polled_at = 0.0
        self.error = None
        self.stopping = asyncio.Event()
        # One thread, so one database connection, for every write of this run.
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"run-{run.pk}-db")

    # --- engine callbacks (in the event loop: no I/O here) -------------------------------

    async def host_started(self, name):
        self._check()
        self._update(name, state=HostResult.State.RUNNING, started_at=timezone.now())
        self._add(name, None, "host", "running\n")

    async def batch_started(self, index, names):
        self._check()

    async def step_started(self, name, step_index, step_name, rendered):
        self._check()
        text = f"=== step {step_index + 1}: {step_name}\n"
        if rendered:
            text += "$ " + rendered + ("" if rendered.endswith("\n") else "\n")
        self._add(name, step_index, "cmd", text)

    async def output(self, name, step_index, stream, text):
        self._check()
        size = self.sizes.get(name, 0)
        if size >= HOST_OUTPUT_LIMIT:
            return
        if size + len(text) >= HOST_OUTPUT_LIMIT:
            self._add(name, step_index, stream, text[:HOST_OUTPUT_LIMIT - size])
            self._add(name, step_index, "result",
                      f"\n--- output cut at {HOST_OUTPUT_LIMIT >> 20} MiB: "
                      "the rest of this host's output was not kept\n")
            self.sizes[name] = HOST_OUTPUT_LIMIT
            return
        self.sizes[name] = size + len(text)
        self._add(name, step_index, stream, text)

    async def diff(self, name, step_index, text):
        self._check()
        self._add(name, step_index, "diff", text if text.endswith("\n") else text + "\n")

    async def step_finished(self, name, step_index, status, exit_status, error):
        self._check()
        note = f"--- {status}" + (f" (exit {exit_status})" if exit_status is not None else "")
        self._add(name, step_index, "result", note + (f": {error}" if error else "") + "\n")

    async def host_finished(self, name, state, exit_status, error_reason, error):
        self._check()
        self._update(name, state=state, exit_status=exit_status, error_reason=error_reason or "",
                     error=error or "", finished_at=timezone.now())
        words = [str(state)]
        if exit_status is not None:
            words.append(f"(exit {exit_status})")
        if error_reason:
            words.append(f"{error_reason}:")
        if error:
            words.append(" ".join(error.split()))
        self._add(name, None, "host", " ".join(words) + "\n")

    async def run_finished(self, outcome):
        self._check()

    def _check(self):
        if self.error is not None:
            raise self.error  # the flusher failed: stop the run rather than lose output

    def _update(self, name, **fields):
        self.pending.setdefault(name, {}).update(fields)

    def _add(self, name, step, stream, text):
        if not text:
            return
        segments = self.segments.setdefault(name, [])
        if segments:
            last = segments[-1]
            if last.step == step and last.stream == stream and stream != "host":
                last.parts.append(text)
                return
        segments.append(_Segment(step, stream, text, time.time()))

    # --- numbering ---------------------------------------------------------------------------

    def _take(self, final=False):
        """Number the buffered output: the events of this batch, in seq order."""
        events = []
        for name in list(self.segments):
            segments = self.segments[name]
            keep = None
            last = segments[-1]
            text = "".join(last.parts) if len(last.parts) > 1 else last.parts[0]
            last.parts = [text]
            if not final and not text.endswith("\n") and last.stream in ("stdout", "stderr"):
                cut = text.rfind("\n") + 1
                # A line held once already and still unfinished goes as it is.
                if cut or not last.held:
                    keep = _Segment(last.step, last.stream, text[cut:], last.at)
                    keep.held = True
                    last.parts = [text[:cut]]
            for segment in segments:
                self._number(events, name, segment)
            if keep is not None:
                self.segments[name] = [keep]
            else:
                del self.segments[name]
        return events

    def _number(self, events, name, segment):
        text = "".join(segment.parts)
        while text:
            piece = text
            if len(text) > EVENT_TEXT_MAX:
                cut = text.rfind("\n", 0, EVENT_TEXT_MAX) + 1 or EVENT_TEXT_MAX
                piece, text = text[:cut], text[cut:]
            else:
                text = ""
            seq = self.seq + 1
            self.seq += output.line_count(piece)
            events.append((seq, name, segment.step, segment.stream, piece, segment.at))

    # --- writing ----------------------------------------------------------------------------

    async def flush_forever(self, cancel):
        """Flush every FLUSH_INTERVAL until ``stop()``; a failed write stops the run."""
        try:
            final = False
            while not final:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), FLUSH_INTERVAL)
                final = self.stopping.is_set()
                cancelled = await self.flush(final=final)
                if cancelled and not cancel.is_set():
                    cancel.set()
        except Exception as exc:
            logger.exception("run %s: writing output failed", self.run.pk)
            self.error = exc
            cancel.set()
            raise

    async def stop(self, flusher):
        """Write what is left (the flusher's last round), tell viewers it ended, and queue
        the compaction of the run's output."""
        self.stopping.set()
        await flusher
        await live.apublish_end(self.run.pk, self.seq)
        await asyncio.get_running_loop().run_in_executor(self.db, self._queue_compaction)

    def _queue_compaction(self):
        try:
            tasks.compact_output.apply_async((self.run.pk,), countdown=1)
        except Exception:  # the broker is away: beat's sweep compacts it later
            logger.warning("run %s: could not queue the output's compaction", self.run.pk,
                           exc_info=True)

    async def flush(self, final=False):
        """Write and publish what is pending; beat; returns whether a cancel was requested."""
        pending, self.pending = self.pending, {}
        events = self._take(final)
        beat = timezone.now() - self.beat_at >= HEARTBEAT_EVERY
        if beat:
            self.beat_at = timezone.now()
        poll = final or time.monotonic() - self.polled_at >= CANCEL_POLL_EVERY
        if poll:
            self.polled_at = time.monotonic()
        if not (pending or events or beat or poll):
            return False
        loop = asyncio.get_running_loop()
        cancelled = await loop.run_in_executor(self.db, self._write, pending, events, beat,
                                               poll)
        if events:
            await live.apublish_events(self.run.pk, events)
        return cancelled

    def _write(self, pending, events, beat, poll):
        close_old_connections()
        run_id = self.run.pk
        with transaction.atomic():
            if events:
                OutputChunk.objects.bulk_create([
                    OutputChunk(run_id=run_id, seq=seq, seq_end=seq + output.line_count(text) - 1,
                                host_name=host, step=step, stream=stream, text=text, at=at)
                    for seq, host, step, stream, text, at in events
                ])
            for name, fields in pending.items():
                HostResult.objects.filter(run_id=run_id, host_name=name).update(**fields)
            if beat:
                Run.objects.filter(pk=run_id).update(heartbeat_at=timezone.now())
        if not poll:
            return False
        return Run.objects.filter(pk=run_id, cancel_requested_at__isnull=False).exists()

    def close(self):
        # ``connection`` is per thread: close the one the database thread opened.
        self.db.submit(lambda: connection.close()).result()
        self.db.shutdown()
