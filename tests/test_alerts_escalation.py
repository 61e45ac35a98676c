"""Escalation (alerts/escalation.py): steps advance on beat ticks with a controlled clock
and stop on ack; each step reaches the outbox exactly once, also across a worker and
beat restart and a crash in the middle of a step; repeats, exhaustion, ack timeouts,
snoozes and unacks restart it in a new cycle; a schedule step pages who
``oncall.services.on_call`` says; the route or the integration picks the policy; a
DingTalk robot (a local HTTP server) receives a working signed ack link."""

import re
from datetime import date, time, timedelta
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from alerts import escalation, flush, incidents, services
from alerts import metrics as alert_metrics
from alerts.models import EscalationStep, Incident, IncidentEvent, Integration, OnCallContact
from alerts.testing import am_alert, am_payload, make_integration, post
from opsplane.notify import services as notify
from opsplane.notify.models import Notification as Outbox
from opsplane.notify.testing import FakeProvider, clear_budgets, make_channel

K = EscalationStep.Kind
S = Incident.Status
MIN = timedelta(minutes=1)


@pytest.fixture
def people(make_user):
    """Three on-call people, each reached through their own webhook channel."""
    found = {}
    for name in ("alice", "bob", "carol"):
        user = make_user("oncall", username=name, email=f"{name}@example.com")
        channel = make_channel("webhook", name=f"hook-{name}", url="http://127.0.0.1:9/x",
                               rate_budget="none")
        contact = OnCallContact.objects.create(user=user, mobile="13800000000")
        contact.channels.set([channel])
        found[name] = user
    return found


def make_policy(admin, steps, *, name="primary", repeat=0):
    return escalation.save_policy(
        escalation.EscalationPolicy(), {"name": name, "repeat": repeat}, steps, by=admin)


def wait(minutes):
    return {"kind": K.WAIT, "wait_minutes": minutes}


def user_step(user):
    return {"kind": K.USER, "user": user}


def open_incident(client, admin, policy, *, name="am", labels=None):
    """An integration falling back to ``policy`` and one firing alert: one incident."""
    integration, token = make_integration(admin, name=name)
    Integration.objects.filter(pk=integration.pk).update(escalation_policy=policy)
    labels = labels or {"alertname": "DiskFull", "instance": "db-1:9100",
                        "severity": "critical"}
    assert post(client, token, am_payload([am_alert(labels)])).status_code == 200
    incident = Incident.objects.get(status=S.TRIGGERED, title__startswith=labels["alertname"])
    return incident, token


def keys():
    return sorted(Outbox.objects.filter(idempotency_key__startswith="alerts:escalation:")
                  .values_list("idempotency_key", flat=True))


def paged(user):
    """How many escalation messages ``user`` was sent (their channel's outbox rows)."""
    return Outbox.objects.filter(idempotency_key__startswith="alerts:escalation:",
                                 idempotency_key__contains=f":user:{user.pk}:").count()


@pytest.mark.django_db
def test_steps_advance_on_ticks_and_stop_on_ack(client, admin_user, people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    policy = make_policy(admin_user, [user_step(alice), wait(5), user_step(bob), wait(5),
                                      user_step(carol)])
    incident, _token = open_incident(client, admin_user, policy)
    t0 = timezone.now()

    assert escalation.tick(t0)["advanced"] == 1
    incident.refresh_from_db()
    assert incident.escalation_policy == policy and incident.escalation_cycle == 1
    assert (paged(alice), paged(bob)) == (1, 0)
    assert incident.next_escalation_at == t0 + 5 * MIN

    # Nothing is due before the wait is over, however often beat ticks.
    for minutes in (0, 1, 4):
        assert escalation.tick(t0 + minutes * MIN)["advanced"] == 0
    assert (paged(alice), paged(bob)) == (1, 0)

    escalation.tick(t0 + 5 * MIN)
    assert (paged(alice), paged(bob), paged(carol)) == (1, 1, 0)

    incidents.acknowledge(incident, bob, via="board", now=t0 + 6 * MIN)
    incident.refresh_from_db()
    assert incident.status == S.ACKNOWLEDGED and incident.next_escalation_at is None
    for minutes in (10, 20, 60):
        escalation.tick(t0 + minutes * MIN)
    assert (paged(alice), paged(bob), paged(carol)) == (1, 1, 0)

    steps = list(IncidentEvent.objects.filter(incident=incident, kind="escalated")
                 .values_list("detail", flat=True))
    assert [(d["step"], d["kind"]) for d in steps] == [(1, "user"), (2, "wait"), (3, "user"),
                                                       (4, "wait")]
    assert steps[0]["notified"] == ["alice"] and steps[0]["channels"] == ["hook-alice"]


@pytest.mark.django_db
def test_repeats_then_exhausts(client, admin_user, people,
                               django_capture_on_commit_callbacks):
    alice = people["alice"]
    policy = make_policy(admin_user, [user_step(alice), wait(2)], repeat=2)
    incident, _token = open_incident(client, admin_user, policy)
    t0 = timezone.now()
    before = alert_metrics.exhausted._value.get()
    steps = alert_metrics.escalation_steps.labels("user")._value.get()
    for minutes in range(0, 12):
        with django_capture_on_commit_callbacks(execute=True):
            escalation.tick(t0 + minutes * MIN)
    assert alert_metrics.escalation_steps.labels("user")._value.get() == steps + 3
    incident.refresh_from_db()
    assert paged(alice) == 3  # the first pass and two repeats
    assert incident.exhausted_at == t0 + 6 * MIN and incident.next_escalation_at is None
    assert incident.escalation_repeat == 2
    exhausted = IncidentEvent.objects.get(incident=incident, kind="exhausted")
    assert exhausted.detail["passes"] == 3
    assert alert_metrics.exhausted._value.get() == before + 1
    assert [k.split(":")[4] for k in keys()] == ["0", "1", "2"]  # repeat numbers


@pytest.mark.django_db
def test_ack_timeout_retriggers_and_restarts_escalation(client, admin_user, people):
    alice = people["alice"]
    policy = make_policy(admin_user, [user_step(alice), wait(30)])
    incident, _token = open_incident(client, admin_user, policy)
    t0 = timezone.now()
    escalation.tick(t0)
    incidents.acknowledge(incident, alice, via="api", timeout=10, now=t0 + MIN)
    incident.refresh_from_db()
    assert incident.ack_until == t0 + 11 * MIN

    escalation.tick(t0 + 10 * MIN)
    assert Incident.objects.get(pk=incident.pk).status == S.ACKNOWLEDGED
    result = escalation.tick(t0 + 11 * MIN)
    assert result == {"woken": 1, "advanced": 1}
    incident.refresh_from_db()
    assert incident.status == S.TRIGGERED and incident.escalation_cycle == 2
    assert incident.ack_until is None and incident.acknowledged_by is None
    assert paged(alice) == 2  # the first step again, in the new cycle
    assert [k.split(":")[3] for k in keys()] == ["1", "2"]  # cycle numbers
    woke = IncidentEvent.objects.filter(incident=incident, kind="unacknowledged").get()
    assert woke.detail["reason"] == "acknowledgement timed out" and woke.actor is None


@pytest.mark.django_db
def test_snooze_and_unack_restart_escalation(client, admin_user, people):
    alice = people["alice"]
    policy = make_policy(admin_user, [user_step(alice), wait(60)])
    incident, _token = open_incident(client, admin_user, policy)
    t0 = timezone.now()
    escalation.tick(t0)
    incidents.snooze(incident, alice, minutes=30, via="board", now=t0 + MIN)
    incident.refresh_from_db()
    assert incident.status == S.ACKNOWLEDGED and incident.snoozed_until == t0 + 31 * MIN
    escalation.tick(t0 + 30 * MIN)
    assert paged(alice) == 1
    escalation.tick(t0 + 31 * MIN)
    incident.refresh_from_db()
    assert incident.status == S.TRIGGERED and incident.escalation_cycle == 2
    assert paged(alice) == 2

    incidents.acknowledge(incident, alice, via="page", now=t0 + 32 * MIN)
    incidents.unacknowledge(incident, alice, via="page", now=t0 + 33 * MIN)
    incident.refresh_from_db()
    assert incident.escalation_cycle == 3 and incident.escalation_step == 0
    escalation.tick(t0 + 33 * MIN)
    assert paged(alice) == 3


@pytest.mark.django_db
def test_resolution_by_the_source_stops_escalation(client, admin_user, people):
    alice, bob = people["alice"], people["bob"]
    policy = make_policy(admin_user, [user_step(alice), wait(5), user_step(bob)])
    labels = {"alertname": "DiskFull", "instance": "db-1:9100", "severity": "critical"}
    incident, token = open_incident(client, admin_user, policy, labels=labels)
    t0 = timezone.now()
    escalation.tick(t0)
    now = timezone.now()
    post(client, token, am_payload([am_alert(labels, status="resolved",
                                             ends_at=now.isoformat())]))
    flush.flush_due(now + timedelta(hours=1))
    incident.refresh_from_db()
    assert incident.status == S.RESOLVED and incident.next_escalation_at is None
    escalation.tick(t0 + 10 * MIN)
    assert (paged(alice), paged(bob)) == (1, 0)


@pytest.mark.django_db
def test_silenced_incident_waits(client, admin_user, people, oncall):
    from alerts import matchers

    alice = people["alice"]
    policy = make_policy(admin_user, [user_step(alice)])
    incident, _token = open_incident(client, admin_user, policy)
    silence = services.create_silence(matchers.parse('alertname="DiskFull"'),
                                      ends_at=timezone.now() + timedelta(hours=1),
                                      comment="maintenance", by=oncall)
    t0 = timezone.now()
    escalation.tick(t0)
    assert paged(alice) == 0
    incident.refresh_from_db()
    assert incident.next_escalation_at == t0 + escalation.SILENCED_RECHECK
    services.expire_silence(silence, by=oncall)
    escalation.tick(t0 + 2 * MIN)
    assert paged(alice) == 1


@pytest.mark.django_db
def test_schedule_step_pages_who_is_on_call(client, admin_user, people):
    from oncall import services as oncall

    alice, bob = people["alice"], people["bob"]
    schedule = oncall.create_schedule(by=admin_user, name="db-primary", time_zone="Asia/Shanghai")
    oncall.create_layer(schedule, by=admin_user, participants=[bob], name="week",
                        rotation="weekly", handoff_time=time(9, 0),
                        start_date=date(2026, 1, 5))
    policy = make_policy(admin_user, [{"kind": K.SCHEDULE, "schedule": schedule}])
    incident, _token = open_incident(client, admin_user, policy)
    t0 = timezone.now()
    assert oncall.on_call(schedule, at=t0) == [bob]
    escalation.tick(t0)
    assert (paged(alice), paged(bob)) == (0, 1)
    event = IncidentEvent.objects.get(incident=incident, kind="escalated")
    assert event.detail["target"] == "db-primary" and event.detail["notified"] == ["bob"]


@pytest.mark.django_db
def test_group_and_channel_steps_and_unreachable_people(client, admin_user, people, make_user):
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="dba")
    people["alice"].groups.add(team)
    nobody = make_user("oncall", username="dave")  # no contact: cannot be reached
    nobody.groups.add(team)
    room = make_channel("webhook", name="dba-room", url="http://127.0.0.1:9/room",
                        rate_budget="none")
    policy = make_policy(admin_user, [{"kind": K.GROUP, "group": team},
                                      {"kind": K.CHANNEL, "channel": room}])
    incident, _token = open_incident(client, admin_user, policy)
    escalation.tick(timezone.now())
    group_event, channel_event = IncidentEvent.objects.filter(
        incident=incident, kind="escalated").order_by("pk")
    assert group_event.detail["notified"] == ["alice"]
    assert group_event.detail["unreachable"] == ["dave"]
    assert channel_event.detail["channels"] == ["dba-room"]
    row = Outbox.objects.get(channel=room)
    # The channel's message links to the incident and to an ack link for whoever opens it.
    assert "/alerts/link/" in row.payload["text"] and row.payload["data"]["user"] is None
    # It says where the policy stands and lists the firing alert.
    assert "step 2 of 2." in row.payload["text"]
    assert "\n- DiskFull" in row.payload["text"] and "db-1" in row.payload["text"]


@pytest.mark.django_db
def test_route_picks_the_policy_and_unknown_names_are_refused(client, admin_user, people,
                                                              oncall):
    alice, bob = people["alice"], people["bob"]
    fallback = make_policy(admin_user, [user_step(alice)], name="fallback")
    make_policy(admin_user, [user_step(bob)], name="dba")
    source = """\
route:
  group_by: [alertname]
  group_wait: 0s
  routes:
    - matchers: [team="db"]
      escalation: dba
      routes:
        - matchers: [severity="critical"]
"""
    services.save_routing(source, by=oncall)
    with pytest.raises(ValidationError) as refused:
        services.save_routing(source.replace("escalation: dba", "escalation: nope"), by=oncall)
    assert "route.routes[0].escalation" in str(refused.value)
    assert "nope" in str(refused.value)
    # The child route inherits `dba`; the integration's policy is only a fallback.
    incident, _token = open_incident(client, admin_user, fallback, labels={
        "alertname": "Replication", "team": "db", "severity": "critical"})
    assert incident.route_key.endswith('{severity="critical"}')
    escalation.tick(timezone.now())
    assert (paged(alice), paged(bob)) == (0, 1)


@pytest.mark.django_db
def test_heartbeat_incident_escalates(admin_user, people):
    from datetime import timedelta as td

    alice = people["alice"]
    policy = make_policy(admin_user, [user_step(alice)])
    integration, _token = make_integration(admin_user, name="cron", kind="generic",
                                           heartbeat_minutes=5)
    Integration.objects.filter(pk=integration.pk).update(
        escalation_policy=policy, created_at=timezone.now() - td(minutes=10))
    assert services.check_heartbeats() == ["cron"]
    incident = Incident.objects.get(title__startswith="HeartbeatMissing")
    escalation.tick(timezone.now())
    incident.refresh_from_db()
    assert incident.escalation_policy == policy and paged(alice) == 1


@pytest.mark.django_db
def test_policy_rules():
    with pytest.raises(ValidationError) as no_wait:
        escalation.check_steps([{"kind": K.USER, "user": object()}], repeat=1)
    assert "wait step" in str(no_wait.value)
    with pytest.raises(ValidationError) as missing:
        escalation.check_steps([{"kind": K.SCHEDULE, "schedule": None}, wait(0)], repeat=0)
    assert "Step 1" in str(missing.value) and "Step 2" in str(missing.value)


@pytest.mark.django_db(transaction=True)
def test_dingtalk_robot_gets_a_working_signed_ack_link(client, admin_user, make_user):
    clear_budgets()
    with FakeProvider() as robot:
        channel = make_channel("dingtalk", name="ops-ding",
                               url=f"{robot.url}/robot/send?access_token=t")
        erin = make_user("oncall", username="erin")
        contact = OnCallContact.objects.create(user=erin, mobile="13912345678")
        contact.channels.set([channel])
        policy = make_policy(admin_user, [user_step(erin), wait(10)])
        incident, _token = open_incident(client, admin_user, policy)
        escalation.tick(timezone.now())
        escalation.tick(timezone.now())  # a second beat finds nothing to repeat
        rows = Outbox.objects.filter(channel=channel)
        assert rows.count() == 1
        notify.deliver(rows.get().pk)
        request = robot.wait_for(1)[0]
    body = request.json
    assert body["at"]["atMobiles"] == ["13912345678"]
    text = body["markdown"]["text"]
    assert f"#{incident.pk}" in text and "@13912345678" in text
    ack_url = re.search(r"\[Acknowledge\]\(([^)]+)\)", text).group(1)
    path = urlsplit(ack_url).path

    client.logout()  # the link works without a login: the signature is the person's
    preview = client.get(path)  # what a chat's link preview does
    assert preview.status_code == 200 and b"Acknowledge" in preview.content
    assert Incident.objects.get(pk=incident.pk).status == S.TRIGGERED
    done = client.post(path)
    assert done.status_code == 200 and b"Escalation has stopped" in done.content
    incident.refresh_from_db()
    assert incident.status == S.ACKNOWLEDGED and incident.acknowledged_by == erin
    ack = IncidentEvent.objects.get(incident=incident, kind="acknowledged")
    assert ack.detail["via"] == "link" and ack.actor == erin
    again = client.post(path)  # replayed: harmless
    assert again.status_code == 200 and b"already acknowledged" in again.content
    assert IncidentEvent.objects.filter(incident=incident, kind="acknowledged").count() == 1


@pytest.mark.django_db(transaction=True)
def test_worker_and_beat_restart_and_a_crash_lose_no_step_and_repeat_none(
        client, admin_user, people, celery_app, monkeypatch):
    """The tick runs in a real Celery worker on the real broker. The worker is stopped
    and a new one started in the middle of the policy; beat's tick is delivered twice;
    a step crashes halfway through its recipients. Every step reaches the outbox once."""
    from celery.contrib.testing.worker import start_worker

    from alerts import tasks

    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    from django.contrib.auth.models import Group

    pair = Group.objects.create(name="pair")
    for user in (bob, carol):
        user.groups.add(pair)
    policy = make_policy(admin_user, [user_step(alice), wait(5),
                                      {"kind": K.GROUP, "group": pair}, wait(5),
                                      user_step(alice)])
    incident, _token = open_incident(client, admin_user, policy)
    t0 = timezone.now()
    celery_app.loader.import_task_module("celery.contrib.testing.tasks")

    def run(at):
        return tasks.escalate.apply_async(kwargs={"at": at.isoformat()}).get(timeout=30)

    with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False,
                      shutdown_timeout=30):
        assert run(t0)["advanced"] == 1
        assert run(t0)["advanced"] == 0  # beat sent the same tick twice
        assert run(t0 + 2 * MIN)["advanced"] == 0
    # The worker is gone; beat restarts; the group step fails after its first message.
    real = escalation.enqueue
    calls = []

    def crash_after_one(*args, **kwargs):
        calls.append(kwargs["key"])
        if len(calls) == 2:
            raise RuntimeError("worker killed mid-step")
        return real(*args, **kwargs)

    monkeypatch.setattr(escalation, "enqueue", crash_after_one)
    with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False,
                      shutdown_timeout=30):
        assert run(t0 + 5 * MIN)["advanced"] == 0  # the crash rolled the step back
        assert (paged(bob), paged(carol)) == (0, 0)
        incident.refresh_from_db()
        assert incident.escalation_step == 2  # still before the group step
        monkeypatch.setattr(escalation, "enqueue", real)
        assert run(t0 + 5 * MIN)["advanced"] == 1
        assert run(t0 + 6 * MIN)["advanced"] == 0
        assert run(t0 + 10 * MIN)["advanced"] == 1
        assert run(t0 + 30 * MIN)["advanced"] == 0  # the policy is over
    assert (paged(alice), paged(bob), paged(carol)) == (2, 1, 1)
    assert len(keys()) == len(set(keys())) == 4
    incident.refresh_from_db()
    assert incident.exhausted_at is not None


@pytest.mark.django_db
def test_the_incident_page_says_where_escalation_stands(client, admin_user, people):
    alice = people["alice"]
    policy = make_policy(admin_user, [user_step(alice), wait(5), user_step(people["bob"])])
    incident, _token = open_incident(client, admin_user, policy)
    escalation.tick(timezone.now())
    client.force_login(alice)
    html = client.get(f"/alerts/incidents/{incident.pk}/").content.decode()
    assert f'href="/alerts/escalation/{policy.pk}/">primary</a>' in html
    assert "after step 2, pass 1; next at" in html

    escalation.tick(timezone.now() + 6 * MIN)
    html = client.get(f"/alerts/incidents/{incident.pk}/").content.decode()
    assert "exhausted: nobody acknowledged" in html
