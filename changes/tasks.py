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


@shared_task(name="changes.compact_output", bind=True, soft_time_limit=900, time_limit=960,
             max_retries=60)
def compact_output(self, run_id):
    """Compact a run's output once its run is over. Queued by the worker as soon as the
    output is complete, which is just before the run's final status is written: until
    then it retries (compaction touches no host, so retrying is safe)."""
    from changes import output
    from changes.models import Run

    run = Run.objects.filter(pk=run_id).only("status").first()
    if run is None:
        return
    if not run.is_terminal:
        raise self.retry(countdown=2)
    output.compact(run_id)


@shared_task(name="changes.sweep_output", soft_time_limit=1800, time_limit=1860)
def sweep_output():
    """Beat: compact what no compact_output task did (a lost task, a crashed worker), and
    delete output older than OPSPLANE_OUTPUT_RETENTION_DAYS."""
    from changes import output

    for run_id in output.runs_to_compact():
        output.compact(run_id)
    output.expire()
