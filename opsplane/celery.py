"""The Celery application. Workers and beat start with ``celery -A opsplane ...``."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsplane.settings")

from opsplane.startup import load_settings  # noqa: E402

load_settings()

app = Celery("opsplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
def _serve_worker_metrics(**kwargs):
    # In a container of its own the worker exposes this host's metrics on a port; under
    # `make run` the web process already adds up the worker's files, so no port is set.
    from opsplane.env import env_int

    port = env_int("OPSPLANE_WORKER_METRICS_PORT", 0, minimum=0, maximum=65535)
    if port:
        from opsplane.metrics import serve_worker_metrics

        serve_worker_metrics(port)


@signals.worker_process_shutdown.connect
def _forget_dead_child(pid=None, **kwargs):
    from opsplane.metrics import process_exited

    process_exited(pid or os.getpid())
