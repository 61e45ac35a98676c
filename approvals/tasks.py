"""Thin Celery entry points of the approvals app."""

from celery import shared_task

from approvals import services


@shared_task(name="approvals.expire_requests", soft_time_limit=60)
def expire_requests():
    """Beat: requests past their validity become expired (each in its own transaction,
    re-checked under a row lock, so an overlapping tick changes nothing)."""
    services.expire_due()
