"""What the live output tests share: lab hosts in the inventory, changes that may run
(approved when a policy asks), waiting for runs, and reading stored output back."""

import json
import time

import pytest
from asgiref.sync import async_to_sync

from changes import output, services
from changes.models import Change, Run, Runbook
from opsplane import demo


@pytest.fixture(name="lab_inventory")
def lab_inventory_fixture(ssh_lab, tmp_path, admin_user):
    """The SSH lab's hosts in the inventory (import this into a test module to use
    ``lab_inventory``)."""
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(ssh_lab))
    demo.load(tmp_path / "logins.json", lab_inventory=path)
    return ssh_lab


def make_change(operator, definition, selector, params=None, *, approvers=(), **strategy):
    """A change that may start: submitted, and approved by ``approvers`` (users with the
    approver role, one per approval asked) when a policy wants approvals."""
    runbook = services.save_runbook(Runbook(), name=f"rb-{time.monotonic_ns()}",
                                    description="", definition=definition, by=operator)
    change = services.compose_change(title="live output", runbook=runbook, selector=selector,
                                     params=params or {}, strategy=strategy, by=operator)
    services.submit_change(change, by=operator)
    change.refresh_from_db()
    if change.status == Change.Status.PENDING_APPROVAL:
        from approvals.testing import approve

        for approver in approvers:
            if not services.approval_problem(change):
                break
            approve(change, by=approver)
        assert not services.approval_problem(change)
    return change


def wait_for(run, timeout=60, until=None):
    """Poll until the run is over (or ``until(run)`` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if (until(run) if until else run.is_terminal):
            return run
        time.sleep(0.05)
    raise AssertionError(f"{run} still {run.status} after {timeout} s")


def stored_lines(run_id, host=None):
    """Every stored line as (seq, host, stream, text), through the paging reader."""
    lines = []
    for event in output.iter_events(run_id, host=host, page_lines=700):
        seq, name, _step, stream, text, _at = event
        lines.extend((seq + i, name, stream, line)
                     for i, line in enumerate(output.split_lines(text)))
    return lines


def event_lines(events):
    """Websocket/API events (lists) as (seq, host, stream, text) lines."""
    lines = []
    for seq, name, _step, stream, text, _at in events:
        lines.extend((seq + i, name, stream, line)
                     for i, line in enumerate(output.split_lines(text)))
    return lines


def assert_numbered(lines, first=1):
    seqs = [line[0] for line in lines]
    assert seqs == list(range(first, first + len(seqs))), "gap or duplicate in seq"


def terminal(run):
    return Run.objects.get(pk=run.pk).is_terminal


def content(response):
    """The body of a (streaming, maybe asynchronous) response."""
    if not getattr(response, "streaming", False):
        return response.content
    if response.is_async:
        async def collect():
            return b"".join([part async for part in response.streaming_content])

        return async_to_sync(collect)()
    return b"".join(response.streaming_content)
