"""Thin Celery entry points of the notification outbox: ids in, one service call.

Delivery is retried by the outbox itself (``next_attempt_at`` and a countdown task,
bounded by ``OPSPLANE_NOTIFY_MAX_ATTEMPTS``), never by Celery's autoretry: the row's
claim is what makes a second run of the same task harmless.
"""

from celery import shared_task

from opsplane.notify import services


@shared_task(name="notify.deliver", soft_time_limit=60, time_limit=90)
def deliver(notification_id):
    services.deliver(notification_id)


@shared_task(name="notify.flush", soft_time_limit=60, time_limit=90)
def flush(channel_id):
    services.flush(channel_id, scheduled=True)


@shared_task(name="notify.sweep", soft_time_limit=120, time_limit=180)
def sweep():
    return services.sweep()
