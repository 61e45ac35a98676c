"""Writes of the project package that are not tokens or audit: process heartbeats."""

from django.utils import timezone

from opsplane import metrics
from opsplane.models import Heartbeat


def record_heartbeat(name, **detail):
    now = timezone.now()
    Heartbeat.objects.update_or_create(name=name, defaults={"at": now, "detail": detail})
    metrics.heartbeats.inc()
    return now


def last_heartbeat(name):
    return Heartbeat.objects.filter(name=name).values_list("at", flat=True).first()


def system_status():
    """What the System page shows: each backing service, the workers, and beat."""
    from datetime import timedelta

    from opsplane import startup
    from opsplane.celery import app

    checks = []
    for label, check in (("Database", startup.check_database), ("Redis", startup.check_redis)):
        try:
            check()
            checks.append({"name": label, "ok": True, "detail": ""})
        except startup.StartupError as exc:
            checks.append({"name": label, "ok": False, "detail": str(exc)})
    try:
        replies = app.control.ping(timeout=1.0)
    except Exception as exc:  # broker down: already reported above, say it here too
        replies, worker_error = [], str(exc)
    else:
        worker_error = ""
    workers = sorted(name for reply in replies for name in reply)
    beat_at = last_heartbeat("beat")
    beat_ok = beat_at is not None and timezone.now() - beat_at < timedelta(minutes=2)
    return {
        "checks": checks,
        "workers": workers,
        "worker_error": worker_error,
        "beat_at": beat_at,
        "beat_ok": beat_ok,
    }
