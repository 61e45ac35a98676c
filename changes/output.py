"""A run's output: numbered events, how they are stored, read back, compacted and expired.

An *event* is a tuple ``(seq, host, step, stream, text, at)``. ``text`` holds one or more
lines, each ending in a newline except perhaps the last (a line the command had not ended
yet); they are numbered ``seq``, ``seq + 1``, ... Numbers count lines per run, across all
hosts, from 1 and without a gap, so whoever has seen everything up to ``n`` asks for what
comes after ``n`` and gets each line exactly once. ``at`` is when the worker read the text
(Unix time); ``step`` is the step's index (None for host events); ``stream`` is stdout,
stderr, diff, or one of the worker's own: ``cmd`` (a step starts: its header and rendered
command), ``result`` (it ended) and ``host`` (the host's state changed; the text starts
with the new state, e.g. ``"failed (exit 1) ..."``).

**Writing.** The worker (``changes.executor.DatabaseSink``) writes events as
``OutputChunk`` rows every few tens of milliseconds, one transaction per batch, in seq
order, and publishes each batch to the run's channel group only after it committed
(``changes.live``). So a reader that joined the group before reading the database misses
nothing: a line is either committed before the read, or published after the join.

**Compacting.** When the run is over, ``compact()`` rewrites its chunks as a few
``OutputBlock`` rows: consecutive seq ranges of about a MiB of text, with one
zlib-compressed JSON section per host, so that replay, the merged view and downloads read
blocks in order while one host's lines are inflated without the others'. Blocks are
written in seq order before the chunks go (in one statement), so they always cover a
prefix ``1..K`` of the run and readers never see a hole.

**Reading.** ``read_after`` / ``read_before`` page through either kind of row: chunks
while they are there (and contiguous with the cursor), blocks otherwise.

**Expiry.** ``expire()`` deletes the output of runs finished more than
``OPSPLANE_OUTPUT_RETENTION_DAYS`` ago (a handful of rows per run after compaction); the
per-host results (state, exit status, error) stay.
"""

import heapq
import json
import logging
import zlib
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from changes.models import OutputBlock, OutputChunk, Run, RunOutput
from opsplane import metrics

logger = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr", "diff", "cmd", "result", "host")
# Rows fetched per query when paging; events hold many lines, so this is plenty.
PAGE_ROWS = 400
# A block holds about this much text (more when it has many hosts, so that each host's
# section still compresses well), and at most BLOCK_LINES lines.
BLOCK_BYTES = 1 << 20
BLOCK_BYTES_PER_HOST = 8 << 10
BLOCK_BYTES_MAX = 8 << 20
BLOCK_LINES = 50_000
COMPACT_LOCK_SECONDS = 600


# --- events --------------------------------------------------------------------------------


def line_count(text):
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def last_seq_of(event):
    return event[0] + line_count(event[4]) - 1


def split_lines(text):
    """The lines of an event's text, without their newlines."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def trim_after(event, after):
    """``event`` without its lines numbered ``after`` or less; None when none is left."""
    seq, host, step, stream, text, at = event
    if seq > after:
        return event
    pos = 0
    for _ in range(after - seq + 1):
        pos = text.find("\n", pos) + 1
        if pos == 0:
            return None
    if pos >= len(text):
        return None
    return (after + 1, host, step, stream, text[pos:], at)


def trim_before(event, before):
    """``event`` without its lines numbered ``before`` or more; None when none is left."""
    seq, host, step, stream, text, at = event
    if seq >= before:
        return None
    pos = 0
    for _ in range(before - seq):
        pos = text.find("\n", pos) + 1
        if pos == 0:
            return event
    if pos >= len(text):
        return event
    return (seq, host, step, stream, text[:pos], at)


def host_state(event):
    """The state a ``host`` event reports (its text's first word)."""
    return event[4].split(None, 1)[0] if event[4].strip() else ""


# --- reading ---------------------------------------------------------------------------


_CHUNK_FIELDS = ("seq", "host_name", "step", "stream", "text", "at")


def _chunks(run_id, host):
    rows = OutputChunk.objects.filter(run_id=run_id)
    return rows.filter(host_name=host) if host is not None else rows


def _blocks(run_id):
    return OutputBlock.objects.filter(run_id=run_id)


def _decode(block, host=None):
    """A block's events in seq order (only ``host``'s when given)."""
    data = block["data"]
    sections = []
    for name, offset, length, _lines in block["index"]:
        if host is not None and name != host:
            continue
        rows = json.loads(zlib.decompress(data[offset:offset + length]))
        sections.append([(seq, name, step, stream, text, at)
                         for seq, step, stream, text, at in rows])
    if len(sections) == 1:
        return sections[0]
    return list(heapq.merge(*sections, key=lambda event: event[0]))


def _with_data(heads, host):
    """Block heads (id, index) with their data, fetched only for the blocks that have a
    section for ``host`` (all of them when None)."""
    if host is not None:
        heads = [h for h in heads if any(entry[0] == host for entry in h["index"])]
    if not heads:
        return []
    data = dict(OutputBlock.objects.filter(id__in=[h["id"] for h in heads])
                .values_list("id", "data"))
    return [{"index": h["index"], "data": data[h["id"]]} for h in heads]


def read_after(run_id, after=0, *, limit=5000, host=None):
    """Events with lines numbered above ``after``, in order: whole events (the first one
    trimmed) until about ``limit`` lines; only ``host``'s when given. ``[]`` means nothing
    more is stored yet. Page on from ``last_seq_of(page[-1])``."""
    rows = _chunks(run_id, host).filter(seq_end__gt=after)
    if host is None:
        rows = rows.filter(seq__lte=after + limit)  # chunks are consecutive: no more needed
    chunks = list(rows.order_by("seq_end").values_list(*_CHUNK_FIELDS)[:PAGE_ROWS])
    first = chunks[0][0] if chunks else None
    if chunks and host is None and first <= after + 1:
        events = chunks
    else:
        # Compacted, or one host's lines (which may sit in blocks below its chunks while
        # a compaction goes on, or when a worker given up for dead wrote late chunks).
        events = _blocks_after(run_id, after, limit, host, below=first) or chunks
    page, lines = [], 0
    for event in events:
        event = trim_after(event, after)
        if event is None:
            continue
        page.append(event)
        lines += line_count(event[4])
        if lines >= limit:
            break
    return page


def _blocks_after(run_id, after, limit, host, below):
    rows = _blocks(run_id).filter(seq_end__gt=after).order_by("seq_end")
    if below is not None:
        rows = rows.filter(seq__lt=below)
    events, lines = [], 0
    for heads in _head_slices(rows):
        for block in _with_data(heads, host):
            for event in _decode(block, host):
                if below is not None and event[0] >= below or last_seq_of(event) <= after:
                    continue
                events.append(event)
                lines += line_count(event[4])
            if lines >= limit:
                return events
    return events


def _head_slices(rows, size=8):
    """Block heads (id, index) in the order of ``rows``, a few at a time."""
    start = 0
    while heads := list(rows.values("id", "index")[start:start + size]):
        yield heads
        start += size


def read_before(run_id, before=None, *, limit=500, host=None):
    """Events with lines numbered below ``before`` (the tail when None), in order: the
    last ``limit`` lines (the first event trimmed to fit); only ``host``'s when given."""
    found, lines, upper = [], 0, before  # found: newest first
    while lines < limit:
        rows = _chunks(run_id, host)
        if upper is not None:
            rows = rows.filter(seq__lt=upper)
        chunks = list(rows.order_by("-seq_end").values_list(*_CHUNK_FIELDS)[:PAGE_ROWS])
        for event in chunks:
            if before is not None and (event := trim_before(event, before)) is None:
                continue
            found.append(event)
            lines += line_count(event[4])
            if lines >= limit:
                break
        if chunks:
            upper = chunks[-1][0]
        if len(chunks) < PAGE_ROWS:
            break
    if lines < limit and upper != 1:
        rows = _blocks(run_id).order_by("-seq_end")
        if upper is not None:
            rows = rows.filter(seq__lt=upper)
        for heads in _head_slices(rows):
            for block in _with_data(heads, host):
                for event in reversed(_decode(block, host)):
                    if upper is not None and event[0] >= upper:
                        continue
                    if before is not None and (event := trim_before(event, before)) is None:
                        continue
                    found.append(event)
                    lines += line_count(event[4])
            if lines >= limit:
                break
    page, lines = [], 0
    for event in found:
        count = line_count(event[4])
        if lines + count > limit:
            if limit - lines > 0:
                page.append(trim_after(event, last_seq_of(event) - (limit - lines)))
            break
        page.append(event)
        lines += count
    page.reverse()
    return page


def iter_events(run_id, after=0, *, host=None, page_lines=20_000):
    """Every stored event after ``after`` in order, page by page (for downloads)."""
    while True:
        page = read_after(run_id, after, limit=page_lines, host=host)
        if not page:
            return
        yield from page
        after = last_seq_of(page[-1])


def last_seq(run_id):
    """The number of the last stored line (0 when there is none)."""
    values = [
        rows.filter(run_id=run_id).order_by("-seq_end").values_list("seq_end", flat=True)
        .first() or 0
        for rows in (OutputChunk.objects, OutputBlock.objects)
    ]
    return max(values)


def search(run_id, query, *, after=0, host=None, limit=200, scan_lines=200_000):
    """Lines containing ``query`` (case-insensitive) after ``after``: ``(matches,
    scanned_to, done)`` with matches ``[seq, host, stream, line]``. Scans at most about
    ``scan_lines`` lines per call; continue from ``scanned_to`` while not ``done``."""
    needle = query.lower()
    matches, scanned = [], 0
    cursor = after
    while scanned < scan_lines:
        page = read_after(run_id, cursor, limit=min(20_000, scan_lines - scanned) or 1,
                          host=host)
        if not page:
            return matches, cursor, True
        for event in page:
            seq, name, _step, stream, text, _at = event
            count = line_count(text)
            if needle in text.lower():
                for offset, line in enumerate(split_lines(text)):
                    if needle in line.lower():
                        matches.append([seq + offset, name, stream, line])
                        if len(matches) >= limit:
                            return matches, seq + offset, False
            scanned += count
            cursor = seq + count - 1
    return matches, cursor, False


# --- downloads ---------------------------------------------------------------------------


def host_text(event):
    """An event as it reads in one host's log: stderr lines marked, the rest as is."""
    _seq, _host, _step, stream, text, _at = event
    if stream == "stderr":
        return "".join(f"[stderr] {line}" for line in text.splitlines(keepends=True))
    if stream == "host":
        return f"--- host {text}" if text.endswith("\n") else f"--- host {text}\n"
    return text


def run_text(event):
    """An event as it reads in the whole run's log: every line prefixed with its host."""
    host = event[1]
    text = host_text(event)
    if not text.endswith("\n"):
        text += "\n"
    return "".join(f"{host} | {line}" for line in text.splitlines(keepends=True))


async def alog_text(run_id, host=None):
    """The whole stored log as encoded text chunks, read page by page (never whole in
    memory): one host's (``host_text``) or, without ``host``, the run's (``run_text``).
    An async iterator for ``StreamingHttpResponse``: under ASGI no thread is held while
    it flows."""
    formatter = host_text if host is not None else run_text
    read = database_sync_to_async(read_after)
    after = 0
    while page := await read(run_id, after, limit=20_000, host=host):
        yield "".join(formatter(event) for event in page).encode()
        after = last_seq_of(page[-1])


# --- compaction ------------------------------------------------------------------------------


def _pack(run_id, events, hosts_seen):
    """One OutputBlock from events (in seq order)."""
    sections = {}
    raw = 0
    for seq, host, step, stream, text, at in events:
        sections.setdefault(host, []).append((seq, step, stream, text, at))
        raw += len(text)
    index, parts, offset = [], [], 0
    for host, rows in sections.items():
        blob = zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 6)
        lines = sum(line_count(row[3]) for row in rows)
        index.append([host, offset, len(blob), lines])
        parts.append(blob)
        offset += len(blob)
        hosts_seen.add(host)
    first, last = events[0][0], last_seq_of(events[-1])
    return OutputBlock(run_id=run_id, seq=first, seq_end=last, index=index,
                       data=b"".join(parts), lines=last - first + 1, raw_bytes=raw)


def compact(run_id):
    """Rewrite the chunks of a finished run as blocks; returns the RunOutput, or None
    when the run is not over (or another compaction of it is going on).

    Idempotent and safe while others read: blocks are written in seq order first (a
    crash leaves a usable prefix, and the next call continues after it), then the chunks
    are deleted in one statement.
    """
    run = Run.objects.filter(pk=run_id).only("status").first()
    if run is None or not run.is_terminal:
        return None
    lock = f"opsplane:changes:compact:{run_id}"
    if not cache.add(lock, 1, COMPACT_LOCK_SECONDS):
        return None
    try:
        return _compact(run_id)
    finally:
        cache.delete(lock)


def _compact(run_id):
    written = write_blocks(run_id)
    with transaction.atomic():
        OutputChunk.objects.filter(run_id=run_id).delete()
        totals = OutputBlock.objects.filter(run_id=run_id).values_list("lines", "raw_bytes",
                                                                       "data")
        line_total = raw_total = stored = 0
        for block_lines, raw, data in totals.iterator():
            line_total += block_lines
            raw_total += raw
            stored += len(data)
        output, _ = RunOutput.objects.update_or_create(run_id=run_id, defaults={
            "lines": line_total, "raw_bytes": raw_total, "stored_bytes": stored,
            "compacted_at": timezone.now()})
    logger.info("run %s: output compacted: %d lines, %d bytes in %d new blocks (%d bytes)",
                run_id, line_total, raw_total, written, stored)
    return output


def write_blocks(run_id):
    """Write blocks for the chunks after the last block (the first half of compaction;
    chunks stay until ``_compact`` deletes them). Returns how many blocks it wrote."""
    done = OutputBlock.objects.filter(run_id=run_id).order_by("-seq_end") \
        .values_list("seq_end", flat=True).first() or 0
    chunks = OutputChunk.objects.filter(run_id=run_id, seq_end__gt=done).order_by("seq_end")
    pending, size, lines, hosts = [], 0, 0, set()
    written = []

    def flush():
        nonlocal pending, size, lines
        if pending:
            block = _pack(run_id, pending, hosts)
            block.save()
            written.append(block)
        pending, size, lines = [], 0, 0

    block_hosts = set()
    for event in chunks.values_list(*_CHUNK_FIELDS).iterator(chunk_size=2000):
        event = trim_after(event, done)  # a chunk straddling the last block's end
        if event is None:
            continue
        pending.append(event)
        block_hosts.add(event[1])
        size += len(event[4])
        lines += line_count(event[4])
        target = min(BLOCK_BYTES_MAX, max(BLOCK_BYTES, len(block_hosts) * BLOCK_BYTES_PER_HOST))
        if size >= target or lines >= BLOCK_LINES:
            flush()
            block_hosts = set()
    flush()
    return len(written)


def runs_to_compact(limit=100):
    """Finished runs that still have chunks (the beat sweep's work list)."""
    run_ids = OutputChunk.objects.values_list("run_id", flat=True).distinct()
    return list(Run.objects.filter(pk__in=run_ids, status__in=Run.TERMINAL)
                .values_list("pk", flat=True)[:limit])


# --- retention ---------------------------------------------------------------------------


def expire(now=None, *, days=None):
    """Delete the output of runs that finished more than ``days`` (default
    ``OPSPLANE_OUTPUT_RETENTION_DAYS``; 0 keeps everything) days ago. Their per-host
    results stay; ``RunOutput.expired_at`` records it. Returns how many runs."""
    days = settings.OPSPLANE_OUTPUT_RETENTION_DAYS if days is None else days
    if not days:
        return 0
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    old = Run.objects.filter(finished_at__lt=cutoff).filter(
        Q(output__isnull=True) | Q(output__expired_at__isnull=True))
    count = 0
    while batch := list(old.values_list("pk", flat=True)[:200]):
        with transaction.atomic():
            # Plain DELETE ... WHERE run_id IN (...): nothing refers to these rows.
            OutputBlock.objects.filter(run_id__in=batch).delete()
            OutputChunk.objects.filter(run_id__in=batch).delete()
            RunOutput.objects.filter(run_id__in=batch).update(expired_at=now,
                                                              stored_bytes=0)
            have = set(RunOutput.objects.filter(run_id__in=batch)
                       .values_list("run_id", flat=True))
            RunOutput.objects.bulk_create([RunOutput(run_id=pk, expired_at=now)
                                           for pk in batch if pk not in have])
        count += len(batch)
    if count:
        logger.info("deleted the output of %d runs finished before %s", count, cutoff)
    return count


# --- metrics ---------------------------------------------------------------------------------


class StoredOutputCollector:
    """Computed at scrape time: ``opsplane_change_output_stored_bytes`` (compressed size of
    compacted output) and ``opsplane_change_output_stored_rows{state}`` (compacted blocks;
    live chunks of runs going or not compacted yet, whose text is not summed: too slow)."""

    def collect(self):
        gauge = GaugeMetricFamily("opsplane_change_output_stored_bytes",
                                  "Compacted run output kept in the database (compressed).")
        rows = GaugeMetricFamily("opsplane_change_output_stored_rows",
                                 "Rows of run output in the database.", labels=["state"])
        try:
            blocks = OutputBlock.objects.aggregate(n=Count("id"))["n"]
            stored = RunOutput.objects.filter(expired_at__isnull=True).aggregate(
                size=Sum("stored_bytes"))["size"] or 0
            live = OutputChunk.objects.aggregate(n=Count("id"))["n"]
        except DatabaseError:
            logger.warning("opsplane_change_output_stored_bytes: database unavailable",
                           exc_info=True)
            return
        gauge.add_metric([], stored)
        rows.add_metric(["compacted"], blocks)
        rows.add_metric(["live"], live)
        yield gauge
        yield rows


metrics.register_collector(StoredOutputCollector())
