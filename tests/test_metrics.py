import pytest

pytestmark = pytest.mark.django_db


def test_metrics_expose_build_info_and_process_metrics(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'opsplane_build_info{python="' in body and 'version="0.1.0"' in body
    assert "process_resident_memory_bytes" in body


def test_metrics_token_is_required_when_configured(client, settings):
    settings.OPSPLANE_METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert ok.status_code == 200
