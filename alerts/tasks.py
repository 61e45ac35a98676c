"""Thin Celery entry points of the alerts app, run by beat's schedule (settings.py).

Each is safe to run twice or concurrently: the state lives in the database and every
piece of work is claimed with a row lock or a conditional UPDATE.
"""

from datetime import datetime

from celery import shared_task

from alerts import escalation, flush, retention, services


@shared_task(name="alerts.flush_due", soft_time_limit=50, time_limit=60)
def flush_due():
    """Group timers: flush the incidents whose group_wait/group_interval has come."""
    return flush.flush_due()


@shared_task(name="alerts.expire", soft_time_limit=50, time_limit=60)
def expire():
    """Resolve alerts whose endsAt passed; start and end silences; prune receipts."""
    return services.expire()


@shared_task(name="alerts.check_heartbeats", soft_time_limit=50, time_limit=60)
def check_heartbeats():
    return services.check_heartbeats()


@shared_task(name="alerts.prune", soft_time_limit=240, time_limit=300)
def prune():
    """Delete incidents and alerts that ended OPSPLANE_ALERT_RETENTION_DAYS ago."""
    return retention.prune()


@shared_task(name="alerts.escalate", soft_time_limit=50, time_limit=60)
def escalate(at=None):
    """Escalation: wake ended ack timeouts and snoozes, take the steps that are due.
    ``at`` (ISO 8601, for tests): the tick's clock instead of now."""
    return escalation.tick(datetime.fromisoformat(at) if at else None)
