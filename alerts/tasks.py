"""Thin Celery entry points of the alerts app, run by beat's schedule (settings.py).

Each is safe to run twice or concurrently: the state lives in the database and every
piece of work is claimed with a row lock or a conditional UPDATE.
"""

from celery import shared_task

from alerts import flush, services


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
