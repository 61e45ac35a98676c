"""Notification timing and suppression with a controlled clock: group_wait,
group_interval, repeat_interval, resolved notifications, silences, inhibition, time
intervals, routing edits, restarts; delivery to a local HTTP server, once."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from alerts import flush, intake, payloads, routing_state, services
from alerts.models import Alert, Incident, Notification
from alerts.testing import (
    Recorder,
    am_alert,
    am_payload,
    make_integration,
    webhook_channel,
)
from opsplane.notify.testing import deliver_outbox

pytestmark = pytest.mark.django_db


T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)

TREE = """
route:
  receiver: team
  group_by: [alertname, cluster]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
  routes:
  - matchers: [team="quiet"]
    receiver: quiet
  - matchers: [team="night"]
    active_time_intervals: [night]
receivers:
  - name: team
    channels: [hook]
  - name: quiet
    channels: [hook]
    send_resolved: false
time_intervals:
  - name: night
    time_intervals:
      - times: [{start_time: "22:00", end_time: "24:00"}]
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [cluster]
"""


@pytest.fixture
def setup(admin_user):
    with Recorder() as recorder:
        webhook_channel("hook", recorder.url, admin_user)
        services.save_routing(TREE, by=admin_user)
        integration, _token = make_integration(admin_user)
        yield integration, recorder


def send(integration, now, *alerts):
    body = json.dumps(am_payload(list(alerts))).encode()
    _envelope, items = payloads.parse_body("alertmanager", body, now)
    return intake.ingest(integration, items, now=now)


def fire(name="HighCPU", at=T0, **labels):
    return am_alert({"alertname": name, "cluster": "prod", **labels},
                    starts_at=at.isoformat())


def resolve(name="HighCPU", at=T0, end=None, **labels):
    return am_alert({"alertname": name, "cluster": "prod", **labels}, status="resolved",
                    starts_at=at.isoformat(), ends_at=(end or at + MIN).isoformat())


def rounds():
    return list(Notification.objects.order_by("created_at", "pk").values_list(
        "round", "firing", "resolved", "status"))


def test_group_wait_interval_and_repeat(setup):
    integration, _recorder = setup
    send(integration, T0, fire(instance="a"))
    incident = Incident.objects.get()
    assert incident.next_flush_at == T0 + 30 * SEC
    assert flush.flush_due(T0 + 29 * SEC) == 0 and rounds() == []
    assert flush.flush_due(T0 + 30 * SEC) == 1
    assert rounds() == [(1, 1, 0, "queued")]
    # A second tick at the same moment, or a beat that restarted: nothing is due.
    assert flush.flush_due(T0 + 30 * SEC) == 0
    routing_state.forget()
    assert flush.flush_due(T0 + 31 * SEC) == 0 and len(rounds()) == 1
    # A new alert in the group waits for the next group_interval tick.
    send(integration, T0 + MIN, fire(instance="b", at=T0 + MIN))
    assert flush.flush_due(T0 + 4 * MIN) == 0
    flush.flush_due(T0 + 5 * MIN + 30 * SEC)
    assert rounds()[-1] == (2, 2, 0, "queued")
    # Nothing new: the next ticks are silent until repeat_interval has passed.
    for minutes in range(10, 65, 5):
        flush.flush_due(T0 + minutes * MIN + 30 * SEC)
    assert len(rounds()) == 2
    flush.flush_due(T0 + 65 * MIN + 30 * SEC)
    assert rounds()[-1] == (3, 2, 0, "queued")


def test_resolved_notification_then_the_incident_closes(setup):
    integration, _recorder = setup
    send(integration, T0, fire(instance="a"), fire(instance="b"))
    flush.flush_due(T0 + 30 * SEC)
    send(integration, T0 + MIN, resolve(instance="a", end=T0 + MIN))
    flush.flush_due(T0 + 5 * MIN + 30 * SEC)
    assert rounds()[-1] == (2, 1, 1, "queued")
    send(integration, T0 + 6 * MIN, resolve(instance="b", end=T0 + 6 * MIN))
    flush.flush_due(T0 + 10 * MIN + 30 * SEC)
    assert rounds()[-1] == (3, 0, 1, "queued")  # "a" was told already, only "b" is new
    incident = Incident.objects.get()
    assert incident.status == "resolved" and incident.next_flush_at is None
    # Firing again later opens a new incident (a new aggregation group), history kept.
    send(integration, T0 + 20 * MIN, fire(instance="a", at=T0 + 20 * MIN))
    assert Incident.objects.filter(status="triggered").count() == 1
    assert Alert.objects.get(labels__instance="a").fire_count == 2


def test_an_alert_that_fires_and_resolves_within_group_wait_is_never_sent(setup):
    integration, _recorder = setup
    send(integration, T0, fire())
    send(integration, T0 + 10 * SEC, resolve(end=T0 + 10 * SEC))
    flush.flush_due(T0 + 30 * SEC)
    assert rounds() == []
    assert Incident.objects.get().status == "resolved"


def test_send_resolved_false_sends_no_resolved_message(setup):
    integration, _recorder = setup
    send(integration, T0, fire(team="quiet"))
    flush.flush_due(T0 + 30 * SEC)
    send(integration, T0 + MIN, resolve(team="quiet", end=T0 + MIN))
    flush.flush_due(T0 + 5 * MIN + 30 * SEC)
    assert rounds() == [(1, 1, 0, "queued")]
    assert Incident.objects.get().status == "resolved"


def test_old_alerts_notify_in_the_intake_transaction(setup):
    """Alerts older than group_wait (e.g. after Alertmanager restarted) flush at once:
    the outbox rows are committed with the alerts, before the 2xx."""
    integration, _recorder = setup
    result = send(integration, T0 + 10 * MIN, fire(at=T0))
    assert result.notifications == 1 and rounds() == [(1, 1, 0, "queued")]
    from opsplane.notify.models import Notification as Outbox

    assert Outbox.objects.get().idempotency_key == \
        f"alerts:incident:{Incident.objects.get().pk}:round:1:channel:hook"


def test_silenced_alerts_are_kept_visible_and_not_notified(setup, oncall):
    integration, _recorder = setup
    send(integration, T0, fire(instance="a"), fire(instance="b"))
    a = Alert.objects.get(labels__instance="a")
    silence = services.silence_alert(a, hours=1, by=oncall, now=T0 + 10 * SEC)
    a.refresh_from_db()
    assert a.silenced_by == silence and a.status == "firing"
    assert list(a.events.values_list("kind", flat=True)) == ["fired", "silenced"]
    flush.flush_due(T0 + 30 * SEC)
    assert rounds() == [(1, 1, 0, "queued")]  # only "b"
    # Everything silenced: nothing at all (what was notified stays as it was)...
    services.silence_alert(Alert.objects.get(labels__instance="b"), hours=1, by=oncall,
                           now=T0 + MIN)
    for minutes in range(5, 60, 5):
        flush.flush_due(T0 + minutes * MIN + 30 * SEC)
    assert rounds() == [(1, 1, 0, "queued")]
    # ...until the silences end by themselves: "a" at 1h0m10s, "b" at 1h1m.
    flush.flush_due(T0 + 60 * MIN + 30 * SEC)
    flush.flush_due(T0 + 65 * MIN + 30 * SEC)
    assert rounds() == [(1, 1, 0, "queued"), (2, 1, 0, "queued"), (3, 2, 0, "queued")]
    services.expire(T0 + 62 * MIN)
    a.refresh_from_db()
    assert a.silenced_by is None
    assert a.events.last().kind == "unsilenced"


def test_silence_hides_alerts_from_flush_until_it_expires(setup, oncall):
    integration, _recorder = setup
    from alerts import matchers

    services.create_silence(matchers.parse('alertname="HighCPU"'), ends_at=T0 + 10 * MIN,
                            comment="maintenance", by=oncall, now=T0)
    send(integration, T0, fire())
    assert Alert.objects.get().silenced_by is not None
    flush.flush_due(T0 + 30 * SEC)
    flush.flush_due(T0 + 5 * MIN + 30 * SEC)
    assert rounds() == []
    flush.flush_due(T0 + 10 * MIN + 30 * SEC)  # the silence has ended
    assert rounds() == [(1, 1, 0, "queued")]


def test_inhibition_as_alertmanager(setup):
    integration, _recorder = setup
    send(integration, T0, fire("Disk", severity="warning"), fire("Disk", severity="warning",
                                                                 cluster="dev"))
    send(integration, T0, fire("NodeDown", severity="critical"))
    flush.flush_due(T0 + 30 * SEC)
    by_title = {n.incident.title: (n.firing, n.text) for n in Notification.objects.all()}
    # The warning in the critical's cluster is inhibited; dev's is not.
    disk_prod = Incident.objects.get(group_labels={"alertname": "Disk", "cluster": "prod"})
    assert not disk_prod.notifications.exists()
    assert by_title["Disk (cluster=dev)"][0] == 1
    # The source resolves: the target is notified at its next tick.
    send(integration, T0 + MIN, resolve("NodeDown", severity="critical", end=T0 + MIN))
    flush.flush_due(T0 + 5 * MIN + 30 * SEC)
    assert disk_prod.notifications.get().firing == 1
    # An alert matching both sides is not inhibited by its like (two-sided rule).
    tree = routing_state.current_tree()
    ctx = flush.FlushContext(tree, T0 + 6 * MIN)
    both = {"alertname": "X", "cluster": "prod", "severity": "critical"}
    assert not ctx.inhibited(both)
    assert ctx.inhibited({"alertname": "Y", "cluster": "dev", "severity": "warning"}) is False


def test_active_time_intervals_mute_the_route(setup):
    integration, _recorder = setup
    noon = T0  # 12:00 UTC: not in "night"
    send(integration, noon, fire(team="night"))
    flush.flush_due(noon + 30 * SEC)
    assert rounds() == []
    night = datetime(2026, 11, 27, 22, 0, 30, tzinfo=UTC)
    flush.flush_due(night)
    assert rounds() == [(1, 1, 0, "queued")]


def test_editing_routes_never_resends(setup, admin_user):
    integration, _recorder = setup
    send(integration, T0, fire())
    flush.flush_due(T0 + 30 * SEC)
    assert len(rounds()) == 1
    # New timers, a new sibling route, another channel list: same route keys.
    edited = TREE.replace("repeat_interval: 1h", "repeat_interval: 2h").replace(
        "  routes:\n", "  routes:\n  - matchers: [team=\"new\"]\n    receiver: quiet\n", 1)
    services.save_routing(edited, by=admin_user, now=T0 + MIN)
    for minutes in (5, 10, 15):
        flush.flush_due(T0 + minutes * MIN + 30 * SEC)
    assert len(rounds()) == 1
    assert Incident.objects.filter(status="triggered").count() == 1
    # Changing the grouping makes new groups: those are new incidents and notify once;
    # the old incident closes without a message.
    regrouped = edited.replace("group_by: [alertname, cluster]", "group_by: [alertname]")
    services.save_routing(regrouped, by=admin_user, now=T0 + 16 * MIN)
    old, new = Incident.objects.order_by("pk")
    assert old.status == "resolved" and new.status == "triggered"
    flush.flush_due(T0 + 17 * MIN)
    assert rounds() == [(1, 1, 0, "queued"), (1, 1, 0, "queued")]
    assert Alert.objects.get().events.filter(kind="unrouted").count() == 1


def test_severity_default_channels(admin_user):
    integration, _token = make_integration(admin_user)  # default tree: by severity
    with Recorder() as recorder:
        webhook_channel("chat", recorder.url, admin_user)
        send(integration, T0, fire("Crit", severity="critical"), fire("Info", severity="info"))
        flush.flush_due(T0 + 30 * SEC)
    rows = {(n.incident.title.split(" ")[0], n.channel_name, n.status)
            for n in Notification.objects.all()}
    assert rows == {("Crit", "chat", "queued"), ("Crit", "sms", "no_channel"),
                    ("Info", "", "recorded")}


def test_delivery_to_a_local_server_happens_once(setup):
    integration, recorder = setup
    send(integration, T0, fire(instance="web-01:9100", severity="critical"))
    flush.flush_due(T0 + 30 * SEC)
    flush.flush_due(T0 + 30 * SEC)
    deliver_outbox()
    deliver_outbox()
    assert len(recorder.requests) == 1
    body = recorder.json()[0]
    incident = Incident.objects.get()
    assert "[FIRING:1] HighCPU (cluster=prod)" in json.dumps(body)
    assert f"/alerts/incidents/{incident.pk}/" in json.dumps(body)
    assert recorder.requests[0]["headers"]["X-Opsplane-Idempotency-Key"] == \
        f"alerts:incident:{incident.pk}:round:1:channel:hook"


def test_end_to_end_through_the_worker_sends_once(celery_worker, admin_user, client):
    """Real parts: HTTP intake, commit, the outbox's task on the real broker, a real
    worker delivering to a local server; beat's tasks run twice change nothing."""
    import time

    from alerts import tasks
    from alerts.testing import fixture, post

    with Recorder() as recorder:
        webhook_channel("hook", recorder.url, admin_user)
        services.save_routing(TREE, by=admin_user)
        _integration, token = make_integration(admin_user)
        # The captured alerts started long before group_wait: notified in the intake's
        # transaction, delivered by the worker after the commit.
        assert post(client, token, fixture("webhook-v4-01.json")).status_code == 200
        deadline = time.monotonic() + 20
        while not recorder.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(2):  # beat's ticks, twice, as after a restart
            tasks.flush_due.delay().get(timeout=30)
            tasks.expire.delay().get(timeout=30)
        time.sleep(0.3)
    assert len(recorder.requests) == 1
    assert "[FIRING:2] HighCPU (cluster=prod)" in recorder.requests[0]["body"].decode()
    assert Notification.objects.count() == 1


def test_each_receiver_hears_what_it_was_not_told(setup, admin_user, settings):
    """Alertmanager's notification log is per receiver and group: a channel added to a
    receiver after the first flush gets the current firing set, the first one nothing
    again; a resolution reaches each once; repeat_interval runs per receiver; a message
    the outbox gave up on is told again at the next tick, to that receiver only."""
    integration, recorder = setup
    settings.OPSPLANE_NOTIFY_MAX_ATTEMPTS = 1

    def told():
        return sorted((n.round, n.channel_name, n.firing, n.resolved)
                      for n in Notification.objects.all())

    with Recorder() as second:
        webhook_channel("hook2", second.url, admin_user)
        send(integration, T0, fire(instance="a"))
        flush.flush_due(T0 + 30 * SEC)
        assert told() == [(1, "hook", 1, 0)]
        two = TREE.replace("    channels: [hook]\n  - name: quiet",
                           "    channels: [hook, hook2]\n  - name: quiet")
        services.save_routing(two, by=admin_user, now=T0 + MIN)
        flush.flush_due(T0 + 5 * MIN + 30 * SEC)
        assert told() == [(1, "hook", 1, 0), (2, "hook2", 1, 0)]
        for minutes in (10, 15):
            flush.flush_due(T0 + minutes * MIN + 30 * SEC)
        assert len(told()) == 2
        deliver_outbox()
        assert len(recorder.requests) == 1 and len(second.requests) == 1
        # repeat_interval (1h) on each receiver's own clock.
        for minutes in range(20, 61, 5):
            flush.flush_due(T0 + minutes * MIN + 30 * SEC)
        assert told()[-1] == (3, "hook", 1, 0) and len(told()) == 3
        flush.flush_due(T0 + 65 * MIN + 30 * SEC)
        assert told()[-1] == (4, "hook2", 1, 0) and len(told()) == 4
        # hook2 fails and the outbox gives up: it alone is told again at the next tick.
        second.status = 500
        deliver_outbox()
        from opsplane.notify.models import Notification as Outbox

        assert Outbox.objects.get(idempotency_key__endswith=":round:4:channel:hook2").state \
            == "dead"
        flush.flush_due(T0 + 70 * MIN + 30 * SEC)
        assert told()[-1] == (5, "hook2", 1, 0) and len(told()) == 5
        second.status = 200
        deliver_outbox()
        flush.flush_due(T0 + 75 * MIN + 30 * SEC)
        assert len(told()) == 5
        # The resolution: once to each receiver, then the incident closes.
        send(integration, T0 + 76 * MIN, resolve(instance="a", end=T0 + 76 * MIN))
        flush.flush_due(T0 + 80 * MIN + 30 * SEC)
        assert told()[-2:] == [(6, "hook", 0, 1), (6, "hook2", 0, 1)]
        flush.flush_due(T0 + 85 * MIN + 30 * SEC)
        assert len(told()) == 7
        assert Incident.objects.get().status == "resolved"
        deliver_outbox()
    bodies = [r["body"].decode() for r in second.requests]
    assert sum("[RESOLVED]" in b for b in bodies) == 1
    assert sum("[RESOLVED]" in r["body"].decode() for r in recorder.requests) == 1
