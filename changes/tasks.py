"""Thin Celery entry points of the changes app."""

from celery import shared_task

from changes import services


@shared_task(name="changes.execute_run", acks_late=True, soft_time_limit=None,
             time_limit=None)
def execute_run(run_id):
    """Run one run on its hosts. Never retried: a command run twice is not harmless.
    A redelivered task finds the run already claimed and returns (services.claim_run);
    its own length is bounded by the steps' timeouts, not by a task time limit."""
    from changes import executor

    executor.execute(run_id)


@shared_task(name="changes.reap_stale_runs", soft_time_limit=60)
def reap_stale_runs():
    services.reap_stale_runs()


@shared_task(name="changes.start_due_changes", soft_time_limit=60)
def start_due_changes():
    services.start_due_changes()
