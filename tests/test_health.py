import pytest

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_database_and_redis_up(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["down"] == []
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]


def test_readyz_names_redis_when_it_is_unreachable(client, settings, unused_tcp_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_tcp_port}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["redis"]
    assert "REDIS_URL" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"]


def test_probes_answer_whatever_host_a_load_balancer_sends(client):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path, HTTP_HOST="10.1.2.3:8000").status_code == 200, path
    # Pages still check the Host header.
    assert client.get("/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_readyz_does_not_reveal_where_the_database_is(client, settings, unused_tcp_port):
    settings.REDIS_URL = f"redis://secret-redis.internal:{unused_tcp_port}/0"
    body = client.get("/readyz").content.decode()
    assert "secret-redis.internal" not in body
