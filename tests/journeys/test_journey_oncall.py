"""Journey 3, on call: a real Prometheus Alertmanager, configured with the receiver
opsplane shows when an admin creates the integration, sends two alerts about a
production host. The on-call person has the alert board open: both appear on it live.
The escalation policy pages whoever is on call (a DingTalk robot, a local HTTP server
standing in for it, receives each message with a signed one-click ack link); the
on-call acknowledges both from the board with the keyboard, and past the time the
policy's next step was due the stand-in has heard nothing more. The incident page shows
the host, the change that ran on it shortly before, the escalation step and the ack;
the alerts resolve in Alertmanager and the incidents close here."""

import re
import time
from datetime import date, timedelta
from datetime import time as clock
from urllib.parse import urlsplit

import pytest
import yaml
from django.utils import timezone
from playwright.sync_api import expect

from alerts import escalation
from alerts import services as alerts
from alerts.models import EscalationPolicy, EscalationStep, Incident, IncidentEvent
from approvals.testing import approve
from changes import services as changes
from changes.models import Change, Runbook
from oncall import services as oncall
from oncall.models import Layer
from opsplane.notify.models import Notification
from opsplane.notify.testing import FakeProvider, clear_budgets, make_channel

pytestmark = pytest.mark.django_db(transaction=True)

# The on-call team's routing: quick timers, so the journey is seconds long.
ROUTING = """\
route:
  group_by: [alertname, instance]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
severity_channels:
  critical: []
  warning: []
  info: []
"""
LABELS = {"alertname": "HighLatency", "instance": "lab-001:9100", "severity": "critical",
          "job": "node"}
ANNOTATIONS = {"summary": "p99 latency above 2 s on lab-001"}
OTHER = {"alertname": "ErrorRate", "instance": "lab-001:9100", "severity": "warning",
         "job": "node"}
OTHER_ANNOTATIONS = {"summary": "5xx above 1% on lab-001"}
OTTO_MOBILE = "13800138000"
# What the stand-in robots are reached at (DingTalk's and WeCom's own paths).
DINGTALK_PATH = "/robot/send"
WECOM_PATH = "/cgi-bin/webhook/send"


def _restart_nginx_on_lab_001(world):
    """The change that ran on the host a little before the alert."""
    users = world["users"]
    change = changes.compose_change(
        title="Restart nginx on lab-001", runbook=Runbook.objects.get(name="restart-service"),
        selector="name=lab-001", params={"service": "nginx", "grace": 0},
        by=users["olga"])
    changes.submit_change(change, by=users["olga"])
    approve(change, by=users["ann"])
    approve(change, by=users["bob"])
    run = changes.start_run(change, by=users["olga"])
    deadline = time.monotonic() + 30
    while not run.is_terminal:
        assert time.monotonic() < deadline, f"{run} still {run.status}"
        time.sleep(0.1)
        run.refresh_from_db()
    assert Change.objects.get(pk=change.pk).status == Change.Status.SUCCEEDED
    return change


def _escalation_policy(world, robot):
    """Who gets paged: whoever is on call on "Platform night" (otto), on his DingTalk;
    a minute later the team's WeCom room. Not what this journey is about, so made
    through the services an admin's forms call."""
    users = world["users"]
    ada, otto = users["ada"], users["otto"]
    schedule = oncall.create_schedule(by=ada, name="Platform night", time_zone="Europe/Berlin")
    oncall.create_layer(schedule, by=ada, participants=[otto], name="Primary",
                        rotation=Layer.Rotation.WEEKLY, handoff_time=clock(9),
                        start_date=date.today() - timedelta(days=7))
    dingtalk = make_channel("dingtalk", name="otto-dingtalk",
                            url=f"{robot.url}{DINGTALK_PATH}?access_token=journey")
    wecom = make_channel("wecom", name="platform-wecom",
                         url=f"{robot.url}{WECOM_PATH}?key=journey")
    escalation.save_contact(otto, {"mobile": OTTO_MOBILE}, [dingtalk], by=otto)
    K = EscalationStep.Kind
    return escalation.save_policy(
        EscalationPolicy(), {"name": "prod-paging", "repeat": 0,
                             "description": "The on-call first, the team room after a minute."},
        [{"kind": K.SCHEDULE, "schedule": schedule}, {"kind": K.WAIT, "wait_minutes": 1},
         {"kind": K.CHANNEL, "channel": wecom}], by=ada)


def _pages(robot, pk):
    """The stand-in's requests about incident ``pk`` (its number in the message)."""
    return [r for r in list(robot.requests) if f"#{pk} " in r.body.decode()]


def _select(board, row_id):
    """Move the board's selection with j/k (as a person does: look, press) until the row
    of incident ``row_id`` is selected."""
    for _ in range(20):
        ids = board.locator("tr[data-incident]").evaluate_all(
            "rows => rows.map(r => [r.dataset.incident, r.getAttribute('aria-selected')])")
        order = [pk for pk, _ in ids]
        current = next((i for i, (_, sel) in enumerate(ids) if sel == "true"), -1)
        target = order.index(str(row_id))
        if current == target:
            return
        key = "j" if target > current else "k"
        board.keyboard.press(key)
        expect(board.locator('tr[aria-selected="true"]')).to_have_count(1)
    raise AssertionError(f"could not select incident {row_id} with j/k")


def _ticks_done(stack):
    """How many escalation ticks the stack's worker finished (its log)."""
    text = stack.log.read_text(errors="replace")
    return len(re.findall(r"Task alerts\.escalate\[[^\]]+\] succeeded", text))


def _wait_for(query, timeout=30):
    deadline = time.monotonic() + timeout
    while (found := query()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return found


def test_oncall_sees_alerts_live_acks_from_the_board_escalation_stops_incident_closes(
        open_browser, stack, world, journey_shots, alertmanager):
    users = world["users"]
    alerts.save_routing(ROUTING, by=users["otto"], comment="quick timers for the journey")
    change = _restart_nginx_on_lab_001(world)
    clear_budgets()
    robot = FakeProvider()  # DingTalk and WeCom both answer {"errcode": 0}
    with robot:
        _journey(open_browser, stack, world, journey_shots, alertmanager, robot, change)


def _journey(open_browser, stack, world, journey_shots, alertmanager, robot, change):
    users = world["users"]
    otto = users["otto"]
    policy = _escalation_policy(world, robot)

    # The on-call person has the board open before anything fires.
    board = open_browser("otto")
    board.goto("/alerts/board/")
    expect(board.locator("#board-live")).to_have_text("live", timeout=20_000)
    board.evaluate("window.__sameDocument = true")  # gone if the page reloads

    # The admin creates the Alertmanager integration, escalating by the on-call policy;
    # the page shows its receiver once.
    admin = open_browser("ada")
    admin.goto("/alerts/integrations/new/")
    admin.fill("#id_name", "prometheus-prod")
    admin.select_option("#id_kind", "alertmanager")
    admin.select_option("#id_escalation_policy", label=policy.name)
    admin.get_by_role("button", name="Save").click()
    expect(admin.locator(".callout")).to_contain_text("token will not be shown again")
    admin.screenshot(path=journey_shots / "01-integration-created.png", caret="initial")
    snippet = yaml.safe_load(admin.locator(".callout pre.code").inner_text())
    manager = alertmanager(snippet["receivers"])

    # Prometheus fires two alerts: Alertmanager sends them to our intake, an incident
    # each (the routing groups by alert name and instance) ...
    manager.fire(LABELS, ANNOTATIONS)
    manager.fire(OTHER, OTHER_ANNOTATIONS)
    incident = _wait_for(lambda: Incident.objects.filter(
        members__alert__labels__alertname="HighLatency").first())
    other = _wait_for(lambda: Incident.objects.filter(
        members__alert__labels__alertname="ErrorRate").first())

    # ... and both appear on the open board, without a reload.
    rows = {pk: board.locator(f'tr[data-incident="{pk}"]') for pk in (incident.pk, other.pk)}
    expect(rows[incident.pk]).to_contain_text("HighLatency", timeout=30_000)
    expect(rows[other.pk]).to_contain_text("ErrorRate", timeout=30_000)
    for row in rows.values():
        expect(row.locator(".c-status")).to_contain_text("triggered")
        expect(row.locator(".c-host")).to_contain_text("lab-001")
    assert board.evaluate("window.__sameDocument") is True

    # The policy's first step pages otto on DingTalk: one message per incident, naming
    # him, with a one-click acknowledge link signed for him and this incident.
    deadline = time.monotonic() + 45
    while not all(_pages(robot, pk) for pk in rows):
        assert time.monotonic() < deadline, f"escalation not received: {robot.requests}"
        time.sleep(0.2)
    for pk in rows:
        [page] = _pages(robot, pk)
        assert page.path == DINGTALK_PATH
        assert page.json["at"]["atMobiles"] == [OTTO_MOBILE]
        text = page.json["markdown"]["text"]
        assert "prod-paging, step 1 of 3" in text and f"@{OTTO_MOBILE}" in text
        ack = urlsplit(re.search(r"\[Acknowledge\]\(([^)]+)\)", text).group(1))
        assert f"{ack.scheme}://{ack.netloc}" == stack.url
        token = ack.path.rstrip("/").rsplit("/", 1)[1]
        assert escalation.load_link(token) == {"i": pk, "c": 1, "u": otto.pk,
                                               "a": "acknowledge"}
    board.screenshot(path=journey_shots / "02-board-alerts-arrived.png", caret="initial")

    # otto acknowledges both from the board with the keyboard: j/k to select, a.
    for pk, row in rows.items():
        _select(board, pk)
        expect(row).to_have_attribute("aria-selected", "true")
        board.keyboard.press("a")
        expect(row.locator(".c-status")).to_contain_text("acknowledged", timeout=15_000)
        expect(row.locator(".c-ack")).to_contain_text("otto")
    assert board.evaluate("window.__sameDocument") is True
    for pk in rows:
        assert Incident.objects.get(pk=pk).status == Incident.Status.ACKNOWLEDGED
    board.screenshot(path=journey_shots / "03-board-acknowledged.png", caret="initial")
    # Had nobody acknowledged, the team room would have been paged a minute after the
    # first step (the policy's wait).
    waits = IncidentEvent.objects.filter(incident__in=list(rows), kind="escalated",
                                         detail__kind="wait")
    assert waits.count() == 2
    next_step_due = max(e.at for e in waits) + timedelta(minutes=1)

    # Meanwhile the incident page (Enter on the board's selection opens it): the host,
    # its service, the change made on it, and a timeline with the page and the ack.
    _select(board, incident.pk)
    board.keyboard.press("Enter")
    board.wait_for_url(f"**/alerts/incidents/{incident.pk}/")
    expect(board.locator("h1")).to_contain_text(incident.title)
    expect(board.locator(".page-head")).to_contain_text("acknowledged")
    host_card = board.locator(".card", has_text="Changes on this host")
    expect(host_card.get_by_role("link", name="lab-001", exact=True)).to_be_visible()
    expect(host_card).to_contain_text("storefront")
    expect(host_card.get_by_role("link", name=str(change))).to_be_visible()
    expect(board.locator(".card", has_text="Alerts").last).to_contain_text(
        "p99 latency above 2 s on lab-001")
    timeline = board.locator(".timeline")
    step = timeline.locator("li.tl-escalated").first
    expect(step).to_contain_text("escalation step")
    expect(step).to_contain_text("Platform night")
    expect(step).to_contain_text("otto-dingtalk")
    expect(timeline.locator("li.tl-acknowledged")).to_contain_text("by otto via board")
    expect(timeline.locator("li.tl-notification", has_text="otto-dingtalk")).to_contain_text(
        "sent")
    board.screenshot(path=journey_shots / "04-incident-acknowledged.png", full_page=True,
                     caret="initial")

    # Past the time the next step was due, and two escalation ticks after it: nothing
    # more reached the stand-in (nor the outbox) about these incidents.
    while (left := (next_step_due - timezone.now()).total_seconds()) > 0:
        time.sleep(min(left, 1.0))
    ticks = _ticks_done(stack)
    _wait_for(lambda: True if _ticks_done(stack) >= ticks + 2 else None, timeout=30)
    assert [len(_pages(robot, pk)) for pk in rows] == [1, 1], robot.requests
    assert len(robot.requests) == 2, robot.requests
    assert not Notification.objects.filter(channel__name="platform-wecom").exists()
    for pk in rows:
        assert Incident.objects.get(pk=pk).status == Incident.Status.ACKNOWLEDGED

    # The condition is gone: Prometheus sends the alert with an end in the past,
    # Alertmanager tells us it resolved, and the incident closes here.
    manager.resolve(LABELS, ANNOTATIONS)
    manager.resolve(OTHER, OTHER_ANNOTATIONS)
    for pk in rows:
        _wait_for(lambda pk=pk: Incident.objects.filter(
            pk=pk, status=Incident.Status.RESOLVED).first())
    board.reload()
    expect(board.locator(".page-head")).to_contain_text("resolved")
    board.screenshot(path=journey_shots / "05-incident-resolved.png", full_page=True,
                     caret="initial")
