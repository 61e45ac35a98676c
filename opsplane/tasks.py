from celery import shared_task

from opsplane import services


@shared_task(name="opsplane.heartbeat", soft_time_limit=30, time_limit=60)
def heartbeat():
    """Scheduled by beat; proves beat -> broker -> worker -> database works."""
    services.record_heartbeat("beat")
