"""Freeze and maintenance windows (time zones, daylight saving), emergencies, scheduled
starts and the calendar."""

from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from approvals import services, windows
from approvals.models import ApprovalRequest, FreezeWindow, MaintenanceWindow
from approvals.testing import approve, mail_channel, request_of
from changes import services as changes
from changes.models import Change, Run, Runbook
from cmdb.models import Environment, Host
from opsplane.notify.testing import deliver_outbox

pytestmark = pytest.mark.django_db

S = ApprovalRequest.Status
FRI, SAT, SUN, MON = 4, 5, 6, 0


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def weekly(start_day, start, end_day, end, tz):
    return SimpleNamespace(kind="weekly", timezone=tz, start_weekday=start_day,
                           end_weekday=end_day, start_time=time(*start), end_time=time(*end))


# --- the clock on the wall ------------------------------------------------------------------------


def test_weekly_freeze_in_shanghai_from_friday_evening_to_monday_morning():
    freeze = weekly(FRI, (18, 0), MON, (8, 0), "Asia/Shanghai")  # UTC+8, no DST
    assert windows.open_at(freeze, utc(2026, 11, 27, 9, 59)) is None
    assert windows.open_at(freeze, utc(2026, 11, 27, 10, 0)) == (
        utc(2026, 11, 27, 10, 0), utc(2026, 11, 30, 0, 0))
    assert windows.open_at(freeze, utc(2026, 11, 29, 23, 59, 59)) is not None
    assert windows.open_at(freeze, utc(2026, 11, 30, 0, 0)) is None
    assert windows.describe(freeze) == "Fri 18:00 – Mon 08:00 Asia/Shanghai"
    # November: the weekend from Oct 30 reaches into it, then four more.
    assert len(windows.occurrences(freeze, utc(2026, 11, 1), utc(2026, 12, 1))) == 5


def test_daylight_saving_spring_forward_skips_into_the_window():
    # Berlin, 2026-03-29: at 02:00 CET the clocks jump to 03:00 CEST; 02:30 never happens.
    window = weekly(SUN, (2, 30), SUN, (4, 0), "Europe/Berlin")
    # The missing 02:30 is read with the offset from before the jump: 01:30 UTC.
    assert windows.open_at(window, utc(2026, 3, 29, 1, 45)) == (
        utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 0))
    assert windows.open_at(window, utc(2026, 3, 29, 1, 29)) is None
    assert windows.open_at(window, utc(2026, 3, 29, 2, 0)) is None
    # A week later, summer time: 02:30 CEST is 00:30 UTC, and the window is 90 minutes.
    assert windows.open_at(window, utc(2026, 4, 5, 0, 30)) == (
        utc(2026, 4, 5, 0, 30), utc(2026, 4, 5, 2, 0))


def test_daylight_saving_fall_back_makes_that_night_an_hour_longer():
    # Berlin, 2026-10-25: at 03:00 CEST the clocks go back to 02:00 CET.
    weekend = weekly(SAT, (22, 0), SUN, (6, 0), "Europe/Berlin")
    starts, ends = zip(*windows.occurrences(weekend, utc(2026, 10, 17), utc(2026, 10, 27)),
                       strict=True)
    assert [e - s for s, e in zip(starts, ends, strict=True)] == [timedelta(hours=8),
                                                                   timedelta(hours=9)]
    assert ends[1] == utc(2026, 10, 25, 5, 0)  # 06:00 CET
    # A wall time that happens twice is its first occurrence (still summer time).
    twice = weekly(SUN, (2, 30), SUN, (2, 45), "Europe/Berlin")
    assert windows.open_at(twice, utc(2026, 10, 25, 0, 35)) == (
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 45))
    assert windows.open_at(twice, utc(2026, 10, 25, 1, 35)) is None  # the second 02:35


def test_dated_holiday_freeze_and_unknown_zones():
    golden_week = SimpleNamespace(kind="dated", timezone="Asia/Shanghai",
                                  start_date=date(2026, 10, 1), start_time=time(0, 0),
                                  end_date=date(2026, 10, 8), end_time=time(0, 0))
    assert windows.open_at(golden_week, utc(2026, 9, 30, 15, 59)) is None
    assert windows.open_at(golden_week, utc(2026, 9, 30, 16, 0)) is not None
    assert windows.open_at(golden_week, utc(2026, 10, 7, 16, 0)) is None
    with pytest.raises(ValueError, match="unknown time zone"):
        windows.zone("Mars/Olympus")


def test_window_fields_are_checked_by_field(admin_user, approver):
    with pytest.raises(PermissionDenied):
        services.save_window(FreezeWindow(), {"name": "x"}, by=approver)
    with pytest.raises(ValidationError) as info:
        services.save_window(FreezeWindow(), {
            "name": "bad", "kind": "weekly", "timezone": "Mars/Olympus", "selector": "group=x",
            "start_time": time(18), "end_time": time(8)}, by=admin_user)
    assert {"timezone", "selector", "start_weekday", "end_weekday"} <= set(
        info.value.message_dict)
    with pytest.raises(ValidationError) as info:
        services.save_window(MaintenanceWindow(), {
            "name": "backwards", "kind": "dated", "timezone": "UTC",
            "start_date": date(2026, 5, 2), "end_date": date(2026, 5, 1),
            "start_time": time(0), "end_time": time(0)}, by=admin_user)
    assert "end_date" in info.value.message_dict


# --- freezes, emergencies, schedules on real changes ---------------------------------------

FRIDAY_NOON = utc(2026, 11, 27, 12, 0)  # Friday 20:00 in Shanghai: inside the freeze below


@pytest.fixture
def clock(monkeypatch):
    """``clock.now`` is what ``timezone.now()`` answers; move it by assigning."""
    state = SimpleNamespace(now=FRIDAY_NOON)
    monkeypatch.setattr(timezone, "now", lambda: state.now)
    return state


@pytest.fixture
def runbook(operator):
    prod = Environment.objects.create(name="prod", protected=True)
    dev = Environment.objects.create(name="dev")
    for i in (1, 2):
        Host.objects.create(name=f"web-{i}", environment=prod, labels={"role": "web"})
    Host.objects.create(name="dev-1", environment=dev, labels={"role": "web"})
    return changes.save_runbook(Runbook(), name="uptime", description="",
                                definition="steps:\n  - kind: shell\n    command: uptime\n",
                                by=operator)


def compose(operator, runbook, selector="env=prod", **fields):
    change = changes.compose_change(title=fields.pop("title", "uptime"), runbook=runbook,
                                    selector=selector, params={}, by=operator, **fields)
    changes.submit_change(change, by=operator)
    change.refresh_from_db()
    return change


def weekend_freeze(admin, environments=("prod",)):
    return services.save_window(FreezeWindow(), {
        "name": "weekend", "environments": list(environments), "kind": "weekly",
        "timezone": "Asia/Shanghai", "start_weekday": FRI, "start_time": time(18),
        "end_weekday": MON, "end_time": time(8)}, by=admin)


def test_a_freeze_blocks_approving_and_starting_and_says_until_when(
        clock, operator, approver, admin_user, runbook, client):
    before = compose(operator, runbook, title="approved before the freeze")
    approve(before, by=approver)
    weekend_freeze(admin_user)
    change = compose(operator, runbook)
    with pytest.raises(services.Frozen) as info:
        approve(change, by=approver)
    assert str(info.value) == ("Frozen: freeze “weekend” (Fri 18:00 – Mon 08:00 Asia/Shanghai) "
                               "on web-1, web-2 until 2026-11-30 08:00 CST.")
    with pytest.raises(services.Frozen, match="until 2026-11-30 08:00 CST"):
        changes.start_run(before, by=operator)
    # Hosts the freeze does not match are not held up.
    dev = compose(operator, runbook, selector="env=dev", title="dev")
    assert changes.start_run(dev, by=operator).number == 1
    # After the freeze, the approved change starts.
    clock.now = utc(2026, 11, 30, 0, 0)
    assert changes.start_run(before, by=operator).number == 1
    body = client.get("/metrics").content.decode()
    assert 'opsplane_approval_freeze_refusals_total{stage="start"}' in body
    assert 'opsplane_approval_freeze_refusals_total{stage="approve"}' in body


def test_an_emergency_bypass_needs_the_role_and_a_reason_and_is_reviewed(
        clock, operator, approver, admin_user, make_user, runbook,
        django_capture_on_commit_callbacks):
    weekend_freeze(admin_user)
    change = compose(operator, runbook)
    req = request_of(change)
    with pytest.raises(PermissionDenied, match="emergency_approver"):
        services.emergency_bypass(req, by=approver, reason="the site is down")
    oncall = make_user("approver")
    oncall.groups.add(Group.objects.get(name="emergency_approver"))
    with pytest.raises(ValidationError) as info:
        services.emergency_bypass(req, by=oncall, reason="  ")
    assert "reason" in info.value.message_dict
    with django_capture_on_commit_callbacks(execute=True):
        bypass = services.emergency_bypass(req, by=oncall, reason="INC-42: the site is down")
    req.refresh_from_db()
    assert req.status == S.APPROVED
    with django_capture_on_commit_callbacks():
        run = changes.start_run(change, by=operator)  # inside the freeze
    assert run.number == 1
    assert list(services.review_list()) == [bypass]
    with pytest.raises(PermissionDenied):
        services.review_bypass(bypass, by=oncall)  # not one's own
    services.review_bypass(bypass, by=approver, note="justified; runbook to be fixed")
    assert list(services.review_list()) == []


def test_an_emergency_bypass_covers_only_the_version_it_was_given_on(
        clock, operator, admin_user, make_user, runbook):
    weekend_freeze(admin_user)
    change = compose(operator, runbook)
    oncall = make_user("operator")
    oncall.groups.add(Group.objects.get(name="emergency_approver"))
    services.emergency_bypass(request_of(change), by=oncall, reason="INC-43")
    change = changes.compose_change(title="uptime", runbook=runbook, selector="name=web-1",
                                    params={}, by=operator, change=change)
    assert request_of(change).status == S.PENDING
    with pytest.raises(services.NotCleared):
        changes.start_run(change, by=operator)


@pytest.fixture
def saturday_maintenance(admin_user):
    return services.save_window(MaintenanceWindow(), {
        "name": "saturday-night", "environments": ["prod"], "kind": "weekly", "timezone": "UTC",
        "start_weekday": SAT, "start_time": time(1), "end_weekday": SAT,
        "end_time": time(5)}, by=admin_user)


def test_a_schedule_must_fall_inside_the_hosts_maintenance_window(
        clock, operator, runbook, saturday_maintenance):
    with pytest.raises(ValidationError) as info:
        compose(operator, runbook, scheduled_at=utc(2026, 11, 27, 20, 0))
    message = info.value.message_dict["scheduled_at"][0]
    assert "outside the maintenance windows of web-1, web-2 (saturday-night)" in message
    assert "The next one opens at 2026-11-28 01:00 UTC." in message
    # Inside it: fine; and hosts no window covers may be scheduled at any time.
    assert compose(operator, runbook, scheduled_at=utc(2026, 11, 28, 2, 0)).pk
    assert compose(operator, runbook, selector="env=dev",
                   scheduled_at=utc(2026, 11, 27, 20, 0)).pk


def test_beat_starts_a_scheduled_change_exactly_once(
        clock, operator, approver, runbook, saturday_maintenance,
        django_capture_on_commit_callbacks):
    change = compose(operator, runbook, scheduled_at=utc(2026, 11, 28, 2, 0))
    approve(change, by=approver)
    assert changes.start_due_changes() == []
    clock.now = utc(2026, 11, 28, 2, 0, 30)
    with django_capture_on_commit_callbacks() as queued:
        assert [r.change_id for r in changes.start_due_changes()] == [change.pk]
        assert changes.start_due_changes() == []  # the next tick
    assert len(queued) == 1 and Run.objects.filter(change=change).count() == 1


def test_a_scheduled_change_that_cannot_start_is_marked_missed_with_the_reason(
        clock, operator, approver, runbook, saturday_maintenance, mailoutbox, settings,
        django_capture_on_commit_callbacks):
    mail_channel(settings)
    operator.email = "olga@example.com"
    operator.save()
    unapproved = compose(operator, runbook, scheduled_at=utc(2026, 11, 28, 2, 0))
    late = compose(operator, runbook, scheduled_at=utc(2026, 11, 28, 4, 30), title="late")
    approve(late, by=approver)
    clock.now = utc(2026, 11, 28, 5, 10)  # beat was down: the window closed at 05:00
    with django_capture_on_commit_callbacks(execute=True):
        assert changes.start_due_changes() == []
    for change, words in ((unapproved, "awaits approval"),
                          (late, "outside the maintenance windows")):
        change.refresh_from_db()
        req = request_of(change)
        assert change.status == Change.Status.DRAFT
        assert req.status == S.MISSED and words in req.close_reason
    deliver_outbox()
    assert any("missed its scheduled start" in m.subject for m in mailoutbox)
    assert changes.start_due_changes() == []  # not tried again
    assert not Run.objects.exists()
    # The author picks a new time: a new round.
    clock.now = utc(2026, 11, 30, 12, 0)
    late = changes.compose_change(title="late", runbook=runbook, selector="env=prod",
                                  params={}, by=operator, change=late,
                                  scheduled_at=utc(2026, 12, 5, 2, 0))
    changes.submit_change(late, by=operator)
    assert request_of(late).status == S.PENDING and request_of(late).round == 2


def test_the_calendar_shows_windows_and_schedules_and_warns_of_shared_hosts(
        clock, operator, approver, admin_user, runbook, saturday_maintenance, client):
    first = compose(operator, runbook, scheduled_at=utc(2026, 11, 28, 2, 0), title="first")
    compose(operator, runbook, selector="name=web-2", title="second",
            scheduled_at=utc(2026, 11, 28, 2, 30))
    compose(operator, runbook, selector="env=dev", title="apart",
            scheduled_at=utc(2026, 11, 28, 2, 30))
    weekend_freeze(admin_user, environments=["dev"])  # declared after "apart" was scheduled
    data = services.calendar(utc(2026, 11, 23), utc(2026, 12, 7))
    kinds = [(e["kind"], e["start"]) for e in data["events"]]
    assert ("maintenance", utc(2026, 11, 28, 1, 0)) in kinds
    assert ("freeze", utc(2026, 11, 27, 10, 0)) in kinds
    assert [(c["a"].title, c["b"].title, c["hosts"]) for c in data["conflicts"]] == [
        (f"#{first.pk} first", f"#{first.pk + 1} second", ["web-2"])]
    apart = next(e for e in data["events"] if e["kind"] == "scheduled"
                 and e["request"].title.endswith("apart"))
    assert "Frozen" in apart["problem"] and not apart["conflict"]
    client.force_login(operator)
    html = client.get("/approvals/calendar/", {"start": "2026-11-23"}).content.decode()
    assert "Scheduled changes that hit the same hosts close together" in html
    assert "saturday-night" in html and "weekend" in html
