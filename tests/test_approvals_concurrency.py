"""Decisions and starts racing each other, on real connections (run it with
``DATABASE_URL=postgresql://...`` for PostgreSQL's row locks; SQLite serializes writers)."""

import threading
from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalPolicy, ApprovalRequest, Decision, MaintenanceWindow
from approvals.testing import approve, host, subject
from changes import services as changes
from changes.models import Run, Runbook
from cmdb.models import Environment, Host
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def race(*actions):
    """Run the actions in threads released at the same moment; their outcomes in order
    ("ok" or the exception's class name)."""
    barrier = threading.Barrier(len(actions))
    outcomes = [None] * len(actions)

    def run(index, action):
        barrier.wait()
        try:
            action()
            outcomes[index] = "ok"
        except Exception as exc:  # noqa: BLE001 - the outcome is what we assert on
            outcomes[index] = type(exc).__name__
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def decide(req, user):
    return lambda: services.decide(ApprovalRequest.objects.get(pk=req.pk), by=user,
                                   kind=Decision.Kind.APPROVE)


def transitions(req, to):
    return AuditEvent.objects.filter(object_type="approvals.approvalrequest",
                                     object_id=str(req.pk), action=f"approval.{to}").count()


def test_two_approvers_at_once_both_count_and_approve_once(operator, make_user):
    ApprovalPolicy.objects.create(name="two", requirements=[{"group": "approver", "count": 2}])
    req = services.open_request(subject(operator, host("web-1")), by=operator)
    a, b = make_user("approver"), make_user("approver")
    assert race(decide(req, a), decide(req, b)) == ["ok", "ok"]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.APPROVED
    assert req.decisions.filter(kind="approve").count() == 2
    assert transitions(req, "approved") == 1


def test_a_double_click_counts_once(operator, make_user):
    ApprovalPolicy.objects.create(name="two", requirements=[{"group": "approver", "count": 2}])
    req = services.open_request(subject(operator, host("web-1")), by=operator)
    a = make_user("approver")
    assert sorted(race(decide(req, a), decide(req, a))) == ["ApprovalError", "ok"]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING
    assert req.decisions.count() == 1


def test_one_needed_two_race_one_wins(operator, make_user):
    req = services.open_request(subject(operator, host("web-1")), by=operator)
    outcomes = race(decide(req, make_user("approver")), decide(req, make_user("approver")))
    assert sorted(outcomes) == ["ApprovalError", "ok"]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.APPROVED
    assert req.decisions.count() == 1 and transitions(req, "approved") == 1


def test_two_beat_ticks_start_a_scheduled_change_once(operator, approver, admin_user,
                                                      monkeypatch):
    start = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: start - timedelta(hours=12))
    prod = Environment.objects.create(name="prod", protected=True)
    Host.objects.create(name="web-1", environment=prod)
    services.save_window(MaintenanceWindow(), {
        "name": "night", "kind": "weekly", "timezone": "UTC", "start_weekday": 5,
        "start_time": time(1), "end_weekday": 5, "end_time": time(5)}, by=admin_user)
    runbook = changes.save_runbook(Runbook(), name="uptime", description="", by=operator,
                                   definition="steps:\n  - kind: shell\n    command: uptime\n")
    change = changes.compose_change(title="t", runbook=runbook, selector="", params={},
                                    scheduled_at=start, by=operator)
    changes.submit_change(change, by=operator)
    approve(change, by=approver)
    monkeypatch.setattr(timezone, "now", lambda: start + timedelta(seconds=5))
    monkeypatch.setattr(changes, "_enqueue", lambda run: None)  # no worker here
    assert race(changes.start_due_changes, changes.start_due_changes) == ["ok", "ok"]
    assert Run.objects.filter(change=change).count() == 1
