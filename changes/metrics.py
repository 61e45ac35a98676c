"""The change engine's Prometheus metrics, counted by the worker that ran the run."""

from prometheus_client import Counter, Histogram

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)

runs = Counter("opsplane_change_runs_total", "Finished runs by final status.", ["status"])
host_results = Counter("opsplane_change_host_results_total",
                       "Per-host results of finished runs, by state.", ["state"])
run_duration = Histogram("opsplane_change_run_duration_seconds",
                         "From a worker starting a run to its end.", buckets=DURATION_BUCKETS)
host_duration = Histogram("opsplane_change_host_duration_seconds",
                          "Time one host took within a run.", buckets=DURATION_BUCKETS)
queue_wait = Histogram("opsplane_change_queue_wait_seconds",
                       "From a run being queued to a worker starting it.",
                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))


def observe_finished(run):
    """Count a finished run (one query for its hosts)."""
    runs.labels(status=run.status).inc()
    if run.started_at:
        queue_wait.observe((run.started_at - run.queued_at).total_seconds())
        run_duration.observe((run.finished_at - run.started_at).total_seconds())
    for state, started, finished in run.results.values_list("state", "started_at",
                                                            "finished_at"):
        host_results.labels(state=state).inc()
        if started and finished:
            host_duration.observe((finished - started).total_seconds())
