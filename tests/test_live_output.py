"""Run output stored for real: the worker numbers every line (gap-free per run), masks
secrets, writes in batches; compaction and retention keep what they must."""

import asyncio
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from live_support import (  # noqa: F401 - lab_inventory_fixture provides lab_inventory
    assert_numbered,
    content,
    lab_inventory_fixture,
    make_change,
    stored_lines,
    wait_for,
)

from changes import executor, output, services
from changes.models import (
    Change,
    HostResult,
    OutputBlock,
    OutputChunk,
    Run,
    RunbookVersion,
    RunOutput,
)
from changes.models import Runbook as RunbookModel

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "hunter2-Sekr1t"

PRINTING = """
parameters:
  - name: token
    type: string
    secret: true
steps:
  - name: print
    kind: shell
    command: |
      i=1
      while [ $i -le 300 ]; do echo "$OPSPLANE_LAB_HOST line $i"; i=$((i+1)); done
      echo "$OPSPLANE_LAB_HOST complains" >&2
      echo "token is {{ token }}"
      printf 'hunter2-'; sleep 0.3; printf 'Sekr1t split\\n'
      printf '\\033[31mred\\033[0m and no newline at the end'
  - name: after
    kind: shell
    command: echo done on $OPSPLANE_LAB_HOST
"""


def bare_run(user, hosts, *, status=Run.Status.RUNNING, finished_at=None):
    """A run with results for ``hosts`` and nothing else (output written by hand)."""
    runbook = RunbookModel.objects.create(name=f"rb-{time.monotonic_ns()}")
    version = RunbookVersion.objects.create(runbook=runbook, number=1, steps=[], digest="x")
    change = Change.objects.create(title="t", runbook_version=version, selector="",
                                   author=user, status=Change.Status.RUNNING)
    terminal = status in Run.TERMINAL
    run = Run.objects.create(change=change, number=1, status=status,
                             finished_at=(finished_at or timezone.now()) if terminal else None)
    HostResult.objects.bulk_create([HostResult(run=run, host_name=h) for h in hosts])
    return run


def feed(run, calls, pause=0.0):
    """Drive the real DatabaseSink with engine calls (method, *args); returns its last seq."""

    async def go():
        sink = executor.DatabaseSink(run)
        flusher = asyncio.create_task(sink.flush_forever(asyncio.Event()))
        for method, *args in calls:
            await getattr(sink, method)(*args)
            if pause:
                await asyncio.sleep(pause)
        await sink.stop(flusher)
        sink.close()
        return sink.seq

    return asyncio.run(go())


def test_the_sink_numbers_lines_keeps_them_whole_and_in_order(operator):
    run = bare_run(operator, ["a", "b"])
    last = feed(run, [
        ("host_started", "a"), ("host_started", "b"),
        ("step_started", "a", 0, "print", "echo hi"),
        ("output", "a", 0, "stdout", "one\ntw"),
        ("output", "b", 0, "stdout", "b1\n"),
        ("output", "a", 0, "stdout", "o\nthree\n"),
        ("output", "a", 0, "stderr", "oops\n"),
        ("output", "a", 0, "stdout", "no end"),
        ("step_finished", "a", 0, "ok", 0, ""),
        ("host_finished", "a", "ok", 0, "", ""),
        ("host_finished", "b", "failed", 1, "exit_status", "step 1 'x': exited with status 1"),
    ], pause=0.03)
    lines = stored_lines(run.pk)
    assert_numbered(lines)
    assert lines[-1][0] == last == output.last_seq(run.pk)
    a = [(stream, text) for _, host, stream, text in lines if host == "a"]
    assert a == [("host", "running"), ("cmd", "=== step 1: print"), ("cmd", "$ echo hi"),
                 ("stdout", "one"), ("stdout", "two"), ("stdout", "three"),
                 ("stderr", "oops"), ("stdout", "no end"), ("result", "--- ok (exit 0)"),
                 ("host", "ok (exit 0)")]
    b = [(stream, text) for _, host, stream, text in lines if host == "b"]
    assert b[-1] == ("host", "failed (exit 1) exit_status: step 1 'x': exited with status 1")
    # The line cut across two chunks ("tw" + "o") is one line, not two.
    assert ("stdout", "tw") not in a
    result = HostResult.objects.get(run=run, host_name="b")
    assert result.state == "failed" and result.exit_status == 1
    # Host filter and tail reads.
    assert [line[3] for line in stored_lines(run.pk, host="b")][:2] == ["running", "b1"]
    tail = output.read_before(run.pk, None, limit=3)
    assert sum(output.line_count(e[4]) for e in tail) == 3
    assert output.last_seq_of(tail[-1]) == last


def test_a_run_on_lab_hosts_stores_every_line_numbered_masked_then_compacted(
        celery_worker, lab_inventory, operator, approver, client):
    change = make_change(operator, PRINTING, "role=web", params={"token": SECRET},
                         approvers=[approver], parallelism=3)
    run = wait_for(services.start_run(change, by=operator))
    assert run.status == Run.Status.SUCCEEDED, list(run.results.values())
    live = stored_lines(run.pk)
    assert_numbered(live)
    hosts = sorted(run.results.values_list("host_name", flat=True))
    for host in hosts:
        mine = [text for _, name, stream, text in live if name == host and stream == "stdout"]
        assert mine[:300] == [f"{host} line {i}" for i in range(1, 301)]
        assert "token is ********" in mine and "******** split" in mine
        assert mine[-2:] == ["\x1b[31mred\x1b[0m and no newline at the end", f"done on {host}"]
        assert (f"{host} complains") in [t for _, n, s, t in live if n == host and s == "stderr"]
    assert not any(SECRET in line[3] for line in live)
    # Printed in two pieces 0.3 s apart, still masked (the command line shows the pieces).
    assert not any("hunter2-" in line[3] for line in live if line[2] != "cmd")
    client.force_login(operator)
    base = f"/changes/{change.pk}/runs/{run.number}"
    run_log = content(client.get(f"{base}/log/"))
    host_log = content(client.get(f"{base}/hosts/{hosts[0]}/log/"))
    assert f"{hosts[0]} | {hosts[0]} line 300\n".encode() in run_log
    assert f"[stderr] {hosts[0]} complains\n".encode() in host_log
    assert SECRET.encode() not in run_log

    # The worker queued the compaction; it runs once the run is over.
    deadline = time.monotonic() + 30
    while not RunOutput.objects.filter(run=run, compacted_at__isnull=False).exists():
        assert time.monotonic() < deadline, "output not compacted"
        time.sleep(0.1)
    assert not OutputChunk.objects.filter(run=run).exists()
    assert OutputBlock.objects.filter(run=run).exists()
    assert stored_lines(run.pk) == live
    assert stored_lines(run.pk, host=hosts[1]) == [x for x in live if x[1] == hosts[1]]
    assert content(client.get(f"{base}/log/")) == run_log
    assert content(client.get(f"{base}/hosts/{hosts[0]}/log/")) == host_log
    stats = RunOutput.objects.get(run=run)
    assert stats.lines == len(live) and 0 < stats.stored_bytes < stats.raw_bytes


def test_readers_agree_while_compacting_and_with_late_chunks(operator, monkeypatch):
    hosts = [f"h{i}" for i in range(5)]
    run = bare_run(operator, hosts)
    calls = []
    for i in range(400):
        host = hosts[i % 5]
        calls.append(("output", host, 0, "stderr" if i % 7 == 0 else "stdout",
                      "".join(f"{host} {i}.{k}\n" for k in range(i % 4 + 1))))
    feed(run, calls, pause=0.001)
    live = stored_lines(run.pk)
    assert_numbered(live)
    by_host = {h: stored_lines(run.pk, host=h) for h in hosts}
    tails = {h: output.read_before(run.pk, 500, limit=37, host=h) for h in hosts}
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED,
                                         finished_at=timezone.now())
    # Small blocks, so that reads cross block boundaries.
    monkeypatch.setattr(output, "BLOCK_BYTES", 2000)
    monkeypatch.setattr(output, "BLOCK_BYTES_PER_HOST", 100)
    # Half-way: blocks written, chunks still there (what a reader sees mid-compaction).
    output.write_blocks(run.pk)
    assert OutputBlock.objects.filter(run=run).count() > 3
    assert OutputChunk.objects.filter(run=run).exists()
    assert stored_lines(run.pk) == live
    # Finished (continues after the blocks already written).
    output.compact(run.pk)
    assert not OutputChunk.objects.filter(run=run).exists()
    assert stored_lines(run.pk) == live
    for host in hosts:
        assert stored_lines(run.pk, host=host) == by_host[host]
        assert output.read_before(run.pk, 500, limit=37, host=host) == tails[host]
    for after in (0, 1, 17, 333, len(live) - 1):
        page = output.read_after(run.pk, after, limit=50)
        assert page[0][0] == after + 1
    assert output.read_before(run.pk, None, limit=10)[-1][0] <= len(live)
    # A worker the reaper gave up on writes late: its lines follow the blocks.
    OutputChunk.objects.create(run=run, seq=len(live) + 1, seq_end=len(live) + 2,
                               host_name="h0", step=0, stream="stdout", text="late\nlater\n",
                               at=time.time())
    after = stored_lines(run.pk)
    assert after[:-2] == live and [x[3] for x in after[-2:]] == ["late", "later"]
    assert [x[3] for x in stored_lines(run.pk, host="h0")[-2:]] == ["late", "later"]
    assert output.runs_to_compact() == [run.pk]
    output.compact(run.pk)
    assert stored_lines(run.pk) == after


def test_search_finds_lines_by_text_and_host(operator):
    run = bare_run(operator, ["a", "b"])
    feed(run, [("output", "a", 0, "stdout", "alpha\nNeedle one\n"),
               ("output", "b", 0, "stdout", "needle two\nbeta\n"),
               ("output", "a", 0, "stdout", "gamma\n")], pause=0.06)
    matches, scanned, done = output.search(run.pk, "NEEDLE")
    assert [m[1:] for m in matches] == [["a", "stdout", "Needle one"],
                                        ["b", "stdout", "needle two"]]
    assert done and scanned == output.last_seq(run.pk)
    matches, _, _ = output.search(run.pk, "needle", host="b")
    assert [m[1] for m in matches] == ["b"]
    first, scanned, done = output.search(run.pk, "needle", limit=1)
    assert len(first) == 1 and not done
    rest, _, done = output.search(run.pk, "needle", after=scanned)
    assert [m[3] for m in rest] == ["needle two"] and done


def test_retention_deletes_old_output_and_keeps_results(operator, settings):
    settings.OPSPLANE_OUTPUT_RETENTION_DAYS = 30
    old = bare_run(operator, ["a"], status=Run.Status.SUCCEEDED,
                   finished_at=timezone.now() - timedelta(days=31))
    recent = bare_run(operator, ["a"], status=Run.Status.SUCCEEDED)
    for run in (old, recent):
        feed(run, [("host_started", "a"), ("output", "a", 0, "stdout", "x\n" * 50),
                   ("host_finished", "a", "ok", 0, "", "")])
        output.compact(run.pk)
    HostResult.objects.filter(run=old).update(state="ok", exit_status=0)
    assert output.expire() == 1
    assert not OutputBlock.objects.filter(run=old).exists()
    assert OutputBlock.objects.filter(run=recent).exists()
    assert RunOutput.objects.get(run=old).expired_at is not None
    assert HostResult.objects.get(run=old).state == "ok"
    assert output.read_after(old.pk) == [] and output.last_seq(old.pk) == 0
    assert output.expire() == 0  # done once
    settings.OPSPLANE_OUTPUT_RETENTION_DAYS = 0
    assert output.expire(now=timezone.now() + timedelta(days=999)) == 0  # 0 keeps for ever
