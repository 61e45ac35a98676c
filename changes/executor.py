"""The Django side of a run: builds the engine's inputs from the database, runs the engine
in the worker, and writes what it reports back in small batches.

The engine (``changes/engine.py``) knows nothing of Django. Everything it reports goes
through ``DatabaseSink``, which buffers in memory; one flusher coroutine writes the
buffer every ``FLUSH_INTERVAL`` seconds from a single database thread, beats the run's
heartbeat and polls for a cancel request, so the event loop never waits on the database.
"""

import asyncio
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from changes import engine, metrics, services
from changes.models import HostResult, Run
from cmdb import crypto
from cmdb import services as cmdb_services

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.25
HEARTBEAT_EVERY = timedelta(seconds=5)
LOG_LIMIT = 5 * 1024 * 1024  # per host, until live output stores events


def execute(run_id):
    """Claim and run one run; returns the finished Run (None when it was not ours)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    run = services.claim_run(run_id, worker)
    if run is None:
        logger.info("run %s: already claimed or cancelled; nothing to do", run_id)
        return None
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
        except crypto.SecretUnreadable as exc:
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
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await sink.flush()
        sink.close()


class DatabaseSink:
    """Keeps what the engine reports in memory and writes it in batches."""

    def __init__(self, run):
        self.run = run
        self.pending = {}  # host name -> {field: value}
        self.logs = {}  # host name -> [text]
        self.log_sizes = {}
        self.beat_at = timezone.now()
        # One thread, so one database connection, for every write of this run.
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"run-{run.pk}-db")

    # --- engine callbacks (in the event loop: no I/O here) -------------------------------

    async def host_started(self, name):
        self._update(name, state=HostResult.State.RUNNING, started_at=timezone.now())

    async def batch_started(self, index, names):
        pass

    async def step_started(self, name, step_index, step_name, rendered):
        self._log(name, f"=== step {step_index + 1}: {step_name}\n$ {rendered}\n")

    async def output(self, name, step_index, stream, text):
        self._log(name, text if stream == "stdout" else "".join(
            f"[stderr] {line}" for line in text.splitlines(keepends=True)))

    async def diff(self, name, step_index, text):
        self._log(name, text if text.endswith("\n") else text + "\n")

    async def step_finished(self, name, step_index, status, exit_status, error):
        note = f"--- {status}" + (f" (exit {exit_status})" if exit_status is not None else "")
        self._log(name, note + (f": {error}" if error else "") + "\n")

    async def host_finished(self, name, state, exit_status, error_reason, error):
        self._update(name, state=state, exit_status=exit_status, error_reason=error_reason or "",
                     error=error or "", finished_at=timezone.now())

    async def run_finished(self, outcome):
        pass

    def _update(self, name, **fields):
        self.pending.setdefault(name, {}).update(fields)

    def _log(self, name, text):
        size = self.log_sizes.get(name, 0)
        if size >= LOG_LIMIT:
            return
        if size + len(text) > LOG_LIMIT:
            text = text[:LOG_LIMIT - size] + "\n[log cut at 5 MiB]\n"
        self.log_sizes[name] = size + len(text)
        self.logs.setdefault(name, []).append(text)

    # --- writing ----------------------------------------------------------------------------

    async def flush_forever(self, cancel):
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            cancelled = await self.flush()
            if cancelled and not cancel.is_set():
                cancel.set()

    async def flush(self):
        """Write what is pending; beat; returns whether a cancel was requested."""
        pending, self.pending = self.pending, {}
        logs, self.logs = self.logs, {}
        beat = timezone.now() - self.beat_at >= HEARTBEAT_EVERY
        if beat:
            self.beat_at = timezone.now()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db, self._write, pending, logs, beat)

    def _write(self, pending, logs, beat):
        close_old_connections()
        with transaction.atomic():
            for name in pending.keys() | logs.keys():
                result = HostResult.objects.select_for_update().only("id", "log").get(
                    run_id=self.run.pk, host_name=name)
                fields = pending.get(name, {})
                for key, value in fields.items():
                    setattr(result, key, value)
                if name in logs:
                    result.log += "".join(logs[name])
                result.save(update_fields=[*fields, *(["log"] if name in logs else [])])
            if beat:
                Run.objects.filter(pk=self.run.pk).update(heartbeat_at=timezone.now())
        return Run.objects.filter(pk=self.run.pk, cancel_requested_at__isnull=False).exists()

    def close(self):
        # ``connection`` is per thread: close the one the database thread opened.
        self.db.submit(lambda: connection.close()).result()
        self.db.shutdown()
