"""A task through the real broker to a real worker, writing to the real database."""

from opsplane import metrics
from opsplane.models import Heartbeat
from opsplane.tasks import heartbeat


def test_heartbeat_task_runs_on_a_worker_and_writes_the_database(celery_worker):
    assert not Heartbeat.objects.exists()
    result = heartbeat.delay()
    result.get(timeout=30)  # through Redis to the worker thread and back
    beat = Heartbeat.objects.get(name="beat")
    assert beat.at is not None


def test_worker_metrics_are_counted(celery_worker, client, admin_user):
    before = metrics.heartbeats._value.get()
    heartbeat.delay().get(timeout=30)
    assert metrics.heartbeats._value.get() == before + 1
    body = client.get("/metrics").content.decode()
    assert "opsplane_heartbeats_total" in body


def test_system_page_shows_the_worker_and_beat(celery_worker, client, admin_user):
    heartbeat.delay().get(timeout=30)
    client.force_login(admin_user)
    html = client.get("/system/").content.decode()
    assert celery_worker.hostname in html
    assert "ticking" in html
