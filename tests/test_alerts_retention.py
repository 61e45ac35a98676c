"""Retention: resolved incidents and alerts go OPSPLANE_ALERT_RETENTION_DAYS after they
ended, in bounded batches; open incidents and the alerts in them never do."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from alerts import flush, intake, payloads, retention, services, tasks
from alerts.models import (
    Alert,
    AlertEvent,
    Incident,
    IncidentAlert,
    IncidentEvent,
    Notification,
    NotificationLog,
)
from alerts.testing import Recorder, am_alert, am_payload, make_integration, webhook_channel

pytestmark = pytest.mark.django_db


T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
DAY = timedelta(days=1)

TREE = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
receivers:
  - name: team
    channels: [hook]
"""


@pytest.fixture
def integration(admin_user):
    with Recorder() as recorder:
        webhook_channel("hook", recorder.url, admin_user)
        services.save_routing(TREE, by=admin_user)
        yield make_integration(admin_user)[0]


def send(integration, now, *alerts):
    body = json.dumps(am_payload(list(alerts))).encode()
    return intake.ingest(integration, payloads.parse_body("alertmanager", body, now)[1],
                         now=now)


def fire(name, instance, at):
    return am_alert({"alertname": name, "instance": instance}, starts_at=at.isoformat())


def resolve(name, instance, at):
    return am_alert({"alertname": name, "instance": instance}, status="resolved",
                    starts_at=(at - MIN).isoformat(), ends_at=at.isoformat())


def test_prune_deletes_only_what_ended_long_enough_ago(integration, settings):
    settings.OPSPLANE_ALERT_RETENTION_DAYS = 30
    # "Old": fired, notified, resolved and closed on day 0.
    send(integration, T0, fire("Old", "a", T0))
    flush.flush_due(T0 + MIN)
    send(integration, T0 + 2 * MIN, resolve("Old", "a", T0 + 2 * MIN))
    flush.flush_due(T0 + 10 * MIN)
    old = Incident.objects.get(title__startswith="Old")
    assert old.status == "resolved" and old.notifications.exists()
    # "Open": "b" resolved on day 0 but "c" still fires, so the incident stays open.
    send(integration, T0, fire("Open", "b", T0), fire("Open", "c", T0))
    flush.flush_due(T0 + MIN)
    send(integration, T0 + 2 * MIN, resolve("Open", "b", T0 + 2 * MIN))
    flush.flush_due(T0 + 10 * MIN)
    still_open = Incident.objects.get(title__startswith="Open")
    assert still_open.status == "triggered"
    # "Recent": resolved on day 20, inside the 30 days.
    day20 = T0 + 20 * DAY
    send(integration, day20, fire("Recent", "d", day20))
    flush.flush_due(day20 + MIN)
    send(integration, day20 + 2 * MIN, resolve("Recent", "d", day20 + 2 * MIN))
    flush.flush_due(day20 + 10 * MIN)
    # An old firing alert outside any incident's reach is never deleted either.
    Alert.objects.filter(labels__instance="c").update(starts_at=T0 - 400 * DAY)

    assert retention.prune(T0 + 29 * DAY) == {"incidents": 0, "alerts": 0}
    assert retention.prune(T0 + 31 * DAY) == {"incidents": 1, "alerts": 1}
    assert not Incident.objects.filter(pk=old.pk).exists()
    for model in (IncidentAlert, IncidentEvent, Notification, NotificationLog):
        assert not model.objects.filter(incident_id=old.pk).exists(), model
    assert not Alert.objects.filter(labels__instance="a").exists()
    assert not AlertEvent.objects.filter(alert__labels__instance="a").exists()
    # The open incident keeps every alert, resolved ones included; the recent one stays.
    assert set(Alert.objects.values_list("labels__instance", flat=True)) == {"b", "c", "d"}
    assert Incident.objects.filter(pk=still_open.pk, status="triggered").exists()
    assert Incident.objects.filter(title__startswith="Recent").exists()
    # Day 51: "Recent" and its alert go; still nothing of the open incident.
    assert retention.prune(T0 + 51 * DAY) == {"incidents": 1, "alerts": 1}
    assert set(Alert.objects.values_list("labels__instance", flat=True)) == {"b", "c"}
    # Once the open incident is over and old enough, its alerts go too.
    send(integration, T0 + 52 * DAY, resolve("Open", "c", T0 + 52 * DAY))
    flush.flush_due(T0 + 52 * DAY + 10 * MIN)
    assert retention.prune(T0 + 60 * DAY) == {"incidents": 0, "alerts": 0}
    assert retention.prune(T0 + 83 * DAY) == {"incidents": 1, "alerts": 2}
    assert not Alert.objects.exists() and not Incident.objects.exists()


def test_prune_works_in_bounded_batches_and_zero_keeps_everything(integration, settings):
    for i in range(5):
        at = T0 + i * MIN
        send(integration, at, fire(f"A{i}", "x", at))
        send(integration, at + MIN, resolve(f"A{i}", "x", at + MIN))
    flush.flush_due(T0 + 20 * MIN)
    assert Incident.objects.filter(status="resolved").count() == 5
    settings.OPSPLANE_ALERT_RETENTION_DAYS = 0
    assert tasks.prune() == {"incidents": 0, "alerts": 0}
    assert Incident.objects.count() == 5
    later = T0 + 100 * DAY
    assert retention.prune(later, days=90, batch=2, max_batches=1) == {"incidents": 2,
                                                                        "alerts": 2}
    # Oldest first.
    assert sorted(Incident.objects.values_list("title", flat=True))[0].startswith("A2")
    assert retention.prune(later, days=90, batch=2) == {"incidents": 3, "alerts": 3}
    assert not Alert.objects.exists()
    assert settings.CELERY_BEAT_SCHEDULE["alerts-prune"]["task"] == "alerts.prune"
