"""Retention: what is over is deleted ``OPSPLANE_ALERT_RETENTION_DAYS`` after it ended.

- A resolved incident resolved before the cutoff goes with its members, timeline,
  notification records and receiver logs (the outbox rows in ``opsplane.notify`` are
  that app's; they only name the incident).
- A resolved alert resolved before the cutoff goes with its timeline, unless it is still
  a member of an incident that stays (open, or resolved after the cutoff): an open
  incident never loses an alert, and a kept incident keeps its list.

Open incidents and firing alerts are never touched. Each batch is one short transaction
that locks what it deletes with SKIP LOCKED, so the intake re-firing an alert (it locks
the alert's row first) and this never wait on each other: a locked row is left for the
next run. Beat's ``alerts.prune`` calls ``prune`` every few minutes; a run stops after
``max_batches``, the next goes on.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from alerts.models import Alert, Incident, IncidentAlert

BATCH = 500
MAX_BATCHES = 20


def cutoff(now=None, days=None):
    """The moment before which what ended is deleted, or None (kept for ever)."""
    days = settings.OPSPLANE_ALERT_RETENTION_DAYS if days is None else days
    if not days:
        return None
    return (now or timezone.now()) - timedelta(days=days)


def prune(now=None, *, days=None, batch=BATCH, max_batches=MAX_BATCHES):
    """Delete incidents and alerts that ended before the cutoff, ``batch`` rows a
    transaction; returns {"incidents": n, "alerts": n}."""
    before = cutoff(now, days)
    deleted = {"incidents": 0, "alerts": 0}
    if before is None:
        return deleted
    for _ in range(max_batches):
        count = _prune_incidents(before, batch)
        deleted["incidents"] += count
        if count < batch:
            break
    for _ in range(max_batches):
        count = _prune_alerts(before, batch)
        deleted["alerts"] += count
        if count < batch:
            break
    return deleted


def _prune_incidents(before, batch):
    with transaction.atomic():
        ids = list(Incident.objects.select_for_update(skip_locked=True)
                   .filter(status=Incident.Status.RESOLVED, resolved_at__lt=before)
                   .order_by("resolved_at", "pk").values_list("pk", flat=True)[:batch])
        if ids:
            Incident.objects.filter(pk__in=ids).delete()
    return len(ids)


def _prune_alerts(before, batch):
    """One batch of old resolved alerts; returns how many were deleted."""
    kept = IncidentAlert.objects.filter(
        Q(incident__status__in=Incident.OPEN) | Q(incident__resolved_at__gte=before))
    with transaction.atomic():
        ids = list(Alert.objects.select_for_update(skip_locked=True)
                   .filter(status=Alert.Status.RESOLVED, resolved_at__lt=before)
                   .exclude(pk__in=kept.values("alert_id"))
                   .order_by("resolved_at", "pk").values_list("pk", flat=True)[:batch])
        if ids:
            Alert.objects.filter(pk__in=ids).delete()
    return len(ids)
