"""The alert intake over HTTP: the captured Alertmanager payloads, Grafana's signed
webhook, the generic format, bad requests (nothing stored), lifecycle, hosts, metrics."""

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from alerts import services
from alerts.fingerprint import fingerprint
from alerts.models import Alert, AlertEvent, Incident, Integration, Receipt
from alerts.testing import (
    am_alert,
    am_payload,
    fixture,
    fixture_names,
    make_integration,
    post,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def am(admin_user):
    return make_integration(admin_user)


# --- identity -----------------------------------------------------------------------------


def test_fingerprint_is_alertmanagers_for_every_captured_alert():
    seen = 0
    for name in fixture_names():
        for alert in fixture(name)["alerts"]:
            assert fingerprint(alert["labels"]) == alert["fingerprint"], (name, alert["labels"])
            seen += 1
    assert seen == 5
    # The reference's worked example, and the rules: empty values dropped, order irrelevant.
    labels = {"alertname": "HighCPU", "cluster": "prod", "instance": "web-01:9100",
              "job": "node", "severity": "critical"}
    assert fingerprint(labels) == "091b66da7a13e02d"
    assert fingerprint({**labels, "team": ""}) == "091b66da7a13e02d"
    assert fingerprint(dict(reversed(labels.items()))) == "091b66da7a13e02d"
    assert fingerprint({}) == "cbf29ce484222325"  # FNV-1a's offset: the empty label set


def test_generic_alert_without_fingerprint_gets_alertmanagers(client, admin_user):
    _integration, token = make_integration(admin_user, name="script", kind="generic")
    labels = fixture("webhook-v4-01.json")["alerts"][0]["labels"]
    response = post(client, token, [{"labels": labels}])  # a bare list, AM API style
    assert response.status_code == 200, response.content
    assert Alert.objects.get().fingerprint == "091b66da7a13e02d"


# --- the captured payloads, in order -------------------------------------------------------


def test_captured_alertmanager_payloads_in_order(client, am):
    integration, token = am
    first = post(client, token, fixture("webhook-v4-01.json"))
    assert first.status_code == 200, first.content
    assert first.json() | {"receipt": 0} == {
        "status": "ok", "receipt": 0, "alerts": 2, "new": 2, "firing": 2, "resolved": 0,
        "refired": 0, "incidents_opened": 1}
    high = Incident.objects.get()
    assert high.group_labels == {"alertname": "HighCPU", "cluster": "prod"}
    assert high.group_key == '{}:{alertname="HighCPU", cluster="prod"}'  # as Alertmanager's
    assert high.severity == "critical" and high.status == "triggered"

    assert post(client, token, fixture("webhook-v4-02.json")).status_code == 200
    disk = Incident.objects.exclude(pk=high.pk).get()
    assert disk.severity == "warning"

    third = post(client, token, fixture("webhook-v4-03.json"))
    assert third.json()["resolved"] == 1 and third.json()["new"] == 0
    web01 = Alert.objects.get(fingerprint="091b66da7a13e02d")
    web02 = Alert.objects.get(fingerprint="59689e1dd8078952")
    assert web01.status == "resolved" and web01.resolution == "sender"
    assert web01.ends_at == datetime(2026, 11, 27, 6, 33, 39, tzinfo=UTC)
    # Identity is the fingerprint, not the start: the firing start stays.
    assert web01.starts_at == datetime(2026, 11, 27, 6, 33, 35, tzinfo=UTC)
    assert web02.status == "firing" and web02.ends_at is None  # Go's zero time: no end
    assert list(web01.events.values_list("kind", flat=True)) == ["fired", "resolved"]
    assert list(web02.events.values_list("kind", flat=True)) == ["fired"]
    high.refresh_from_db()
    assert high.status == "triggered"  # web-02 still fires
    assert Alert.objects.count() == 3 and Receipt.objects.count() == 3
    assert web01.integration == integration


def test_a_repeated_payload_changes_nothing(client, am):
    _integration, token = am
    for _ in range(3):
        assert post(client, token, fixture("webhook-v4-01.json")).status_code == 200
    assert Alert.objects.count() == 2 and Incident.objects.count() == 1
    assert AlertEvent.objects.count() == 2


def test_unknown_fields_are_kept_in_the_raw_payload(client, am):
    _integration, token = am
    payload = fixture("webhook-v4-01.json")
    payload["notification_reason"] = "first notification"
    payload["routeLabels"] = {"team": "web"}
    payload["alerts"][0]["somethingNew"] = {"x": 1}
    assert post(client, token, payload).status_code == 200
    receipt = Receipt.objects.get()
    assert receipt.envelope["notification_reason"] == "first notification"
    assert receipt.envelope["routeLabels"] == {"team": "web"}
    assert "alerts" not in receipt.envelope
    assert Alert.objects.get(fingerprint="091b66da7a13e02d").raw["somethingNew"] == {"x": 1}


# --- lifecycle -----------------------------------------------------------------------------


def test_ends_at_in_the_past_resolves_without_a_resolve(client, admin_user):
    _integration, token = make_integration(admin_user, name="api", kind="generic")
    soon = (timezone.now() + timedelta(minutes=5)).isoformat()
    post(client, token, {"alerts": [{"labels": {"alertname": "Disk"}, "endsAt": soon}]})
    alert = Alert.objects.get()
    assert alert.status == "firing"
    assert services.expire(timezone.now()) == 0
    assert services.expire(timezone.now() + timedelta(minutes=6)) == 1
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolution == "expired"
    assert list(alert.events.values_list("kind", flat=True)) == ["fired", "expired"]


def test_refire_reopens_the_same_alert_with_its_history(client, am):
    _integration, token = am
    labels = {"alertname": "Flap", "instance": "db-01:9100"}
    post(client, token, am_payload([am_alert(labels, starts_at="2026-01-01T00:00:00Z")]))
    post(client, token, am_payload([am_alert(labels, status="resolved",
                                             starts_at="2026-01-01T00:00:00Z",
                                             ends_at="2026-01-01T00:05:00Z")]))
    # A late retry of the first notification (same start) does not reopen it...
    stale = post(client, token, am_payload([am_alert(labels, starts_at="2026-01-01T00:00:00Z")]))
    assert stale.json()["refired"] == 0
    assert Alert.objects.get().status == "resolved"
    # ...a real re-fire (later start) does.
    again = post(client, token, am_payload([am_alert(labels, starts_at="2026-01-01T01:00:00Z")]))
    assert again.json()["refired"] == 1
    alert = Alert.objects.get()
    assert alert.status == "firing" and alert.fire_count == 2 and alert.resolved_at is None
    assert list(alert.events.values_list("kind", flat=True)) == ["fired", "resolved", "refired"]


def test_generic_resolve_timeout(client, admin_user):
    _integration, token = make_integration(admin_user, name="cron", kind="generic",
                                           resolve_timeout_minutes=5)
    post(client, token, {"alerts": [{"labels": {"alertname": "BackupLate"}}]})
    alert = Alert.objects.get()
    assert alert.ends_at is not None
    services.expire(timezone.now() + timedelta(minutes=6))
    alert.refresh_from_db()
    assert alert.status == "resolved"


# --- authentication and bad input: 4xx, nothing stored ----------------------------------------


def _nothing_stored():
    assert Alert.objects.count() == 0 and Receipt.objects.count() == 0
    assert Incident.objects.count() == 0


def test_tokens(client, am, admin_user):
    integration, token = am
    body = fixture("webhook-v4-01.json")
    assert post(client, "", body, path_token=False, HTTP_AUTHORIZATION="").status_code == 401
    response = post(client, "alt_00000000_nope", body)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert post(client, token + "x", body).status_code == 401
    assert post(client, "ops_abc_userapitoken", body).status_code == 401
    _nothing_stored()
    Integration.objects.filter(pk=integration.pk).update(enabled=False)
    assert post(client, token, body).status_code == 403
    _nothing_stored()
    Integration.objects.filter(pk=integration.pk).update(enabled=True)
    assert post(client, token, body, path_token=False).status_code == 200  # bearer header
    new = services.rotate_token(integration, by=admin_user)
    assert post(client, token, body).status_code == 401
    assert post(client, new, body).status_code == 200


@pytest.mark.parametrize(("body", "path", "words"), [
    (b"{not json", "body", "not valid JSON"),
    (b"\xff\xfe", "body", "not"),
    (b"[]", "body", "JSON object"),
    (b'{"alerts": {}}', "alerts", "list"),
    (b'{"version": "4"}', "alerts", "required"),
    (b'{"alerts": [1]}', "alerts[0]", "object"),
    (b'{"alerts": [{"labels": {}}]}', "alerts[0].labels", "at least one label"),
    (b'{"alerts": [{"labels": {"a": "b", "severity": 3}}]}', "alerts[0].labels.severity",
     "string"),
    (b'{"alerts": [{"labels": {"a": "b"}, "startsAt": "yesterday"}]}', "alerts[0].startsAt",
     "RFC 3339"),
    (b'{"alerts": [{"labels": {"a": "b"}, "status": "burning"}]}', "alerts[0].status",
     "firing"),
    (b'{"alerts": [{"labels": {"a": "b"}}, {"labels": {"a": "b"}, "fingerprint": "a b"}]}',
     "alerts[1].fingerprint", "letters"),
])
def test_malformed_bodies_say_what_is_wrong(client, am, body, path, words):
    _integration, token = am
    response = post(client, token, body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors[0]["path"] == path and words in errors[0]["message"], errors
    _nothing_stored()


def test_one_bad_alert_stores_none_of_the_batch(client, am):
    _integration, token = am
    alerts = [am_alert({"alertname": f"A{i}"}) for i in range(50)]
    alerts[37]["labels"]["bad"] = None
    response = post(client, token, am_payload(alerts))
    assert response.status_code == 400
    assert response.json()["errors"] == [{"path": "alerts[37].labels.bad",
                                          "message": "must be a string"}]
    _nothing_stored()


def test_huge_bodies_are_refused_before_reading(client, am, settings):
    _integration, token = am
    settings.OPSPLANE_ALERTS_MAX_BODY_BYTES = 4096
    big = am_payload([am_alert({"alertname": "A", "x": "y" * 5000})])
    response = post(client, token, big)
    assert response.status_code == 413
    # Refused on Content-Length alone, before the token is even looked at.
    assert post(client, "no-such-token", big).status_code == 413
    _nothing_stored()
    assert post(client, token, am_payload([am_alert({"alertname": "A"})])).status_code == 200


# --- Grafana ---------------------------------------------------------------------------------


def _grafana_payload():
    return {
        "receiver": "opsplane", "status": "firing", "orgId": 1, "title": "[FIRING:1] Disk",
        "state": "alerting", "message": "Disk full", "version": "1",
        "groupKey": "{}:{alertname=\"Disk\"}", "truncatedAlerts": 0, "groupLabels": {},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://grafana/",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "Disk", "instance": "db-01", "__alert_rule_uid__": "u1"},
            "annotations": {"summary": "Disk full"}, "startsAt": "2026-11-27T06:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://grafana/alerting/u1",
            "fingerprint": "5f6e7d8c9b0a1234", "silenceURL": "http://grafana/silence",
            "dashboardURL": "", "panelURL": "", "values": {"B": 97.5},
            "valueString": "[ var='B' value=97.5 ]"}],
    }


def _sign(secret, body, stamp=""):
    signed = f"{stamp}:".encode() + body if stamp else body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def test_grafana_signature(client, admin_user):
    _integration, token = make_integration(admin_user, name="grafana", kind="grafana",
                                           secret="s3cret")
    body = json.dumps(_grafana_payload()).encode()
    assert post(client, token, body).status_code == 403  # unsigned
    bad = post(client, token, body, HTTP_X_GRAFANA_ALERTING_SIGNATURE=_sign("other", body))
    assert bad.status_code == 403 and "bad signature" in bad.json()["detail"]
    tampered = body.replace(b"97.5", b"12.5")
    assert post(client, token, tampered,
                HTTP_X_GRAFANA_ALERTING_SIGNATURE=_sign("s3cret", body)).status_code == 403
    _nothing_stored()
    ok = post(client, token, body, HTTP_X_GRAFANA_ALERTING_SIGNATURE=_sign("s3cret", body))
    assert ok.status_code == 200, ok.content
    alert = Alert.objects.get()
    assert alert.labels == {"alertname": "Disk", "instance": "db-01"}  # __x__ removed
    assert alert.fingerprint == "5f6e7d8c9b0a1234"  # Grafana's own, as given
    assert alert.raw["values"] == {"B": 97.5}


def test_grafana_signature_with_timestamp_header(client, admin_user):
    _integration, token = make_integration(
        admin_user, name="grafana", kind="grafana", secret="s3cret",
        hmac_timestamp_header="X-Grafana-Alerting-Timestamp")
    body = json.dumps(_grafana_payload()).encode()
    stamp = str(int(time.time()))
    signature = _sign("s3cret", body, stamp)
    assert post(client, token, body, HTTP_X_GRAFANA_ALERTING_SIGNATURE=signature).status_code \
        == 403  # the timestamp is part of what was signed
    ok = post(client, token, body, HTTP_X_GRAFANA_ALERTING_SIGNATURE=signature,
              HTTP_X_GRAFANA_ALERTING_TIMESTAMP=stamp)
    assert ok.status_code == 200
    old = str(int(time.time()) - 3600)
    replay = post(client, token, body, HTTP_X_GRAFANA_ALERTING_SIGNATURE=_sign("s3cret", body, old),
                  HTTP_X_GRAFANA_ALERTING_TIMESTAMP=old)
    assert replay.status_code == 403


def test_generic_integration_signature(client, admin_user):
    _integration, token = make_integration(admin_user, name="app", kind="generic", secret="k")
    body = b'{"alerts": [{"labels": {"alertname": "X"}}]}'
    assert post(client, token, body).status_code == 403
    assert post(client, token, body,
                HTTP_X_OPSPLANE_SIGNATURE="sha256=" + _sign("k", body)).status_code == 200


# --- hosts -------------------------------------------------------------------------------------


def test_alerts_link_to_cmdb_hosts_by_name_or_address(client, am):
    from cmdb.models import Environment, Host

    env = Environment.objects.create(name="prod")
    web = Host.objects.create(name="web-01", address="10.0.0.1", environment=env)
    db = Host.objects.create(name="db-primary", address="10.0.0.9", environment=env)
    _integration, token = am
    post(client, token, am_payload([
        am_alert({"alertname": "A", "instance": "web-01:9100"}),
        am_alert({"alertname": "B", "host": "10.0.0.9"}),
        am_alert({"alertname": "C", "hostname": "[::1]:9100"}),
        am_alert({"alertname": "D", "instance": "unknown:80"}),
    ]))
    hosts = {a.alertname: (a.host_id, a.host_hint) for a in Alert.objects.all()}
    assert hosts == {"A": (web.pk, "web-01"), "B": (db.pk, "10.0.0.9"), "C": (None, "::1"),
                     "D": (None, "unknown")}


# --- heartbeats ----------------------------------------------------------------------------------


def test_a_silent_heartbeat_integration_opens_an_incident(client, admin_user):
    integration, token = make_integration(admin_user, name="watchdog", kind="heartbeat",
                                          heartbeat_minutes=5)
    now = timezone.now()
    assert services.check_heartbeats(now) == []
    assert post(client, token, b"anything").status_code == 200
    assert Alert.objects.count() == 0  # a heartbeat's body is not alerts
    later = timezone.now() + timedelta(minutes=6)
    assert services.check_heartbeats(later) == ["watchdog"]
    assert services.check_heartbeats(later + timedelta(minutes=1)) == []  # once
    alert = Alert.objects.get()
    assert alert.labels == {"alertname": "HeartbeatMissing", "integration": "watchdog",
                            "severity": "critical"}
    assert alert.status == "firing"
    incident = Incident.objects.get()
    assert incident.severity == "critical"
    # The integration posts again: the heartbeat alert resolves.
    assert post(client, token, b"").status_code == 200
    alert.refresh_from_db()
    assert alert.status == "resolved"
    integration.refresh_from_db()
    assert integration.heartbeat_missing_since is None
    # Each silent integration has an incident of its own (the default tree's route).
    make_integration(admin_user, name="other", kind="heartbeat", heartbeat_minutes=5)
    services.check_heartbeats(timezone.now() + timedelta(minutes=30))
    assert Incident.objects.filter(status="triggered").count() == 2


# --- metrics ---------------------------------------------------------------------------------


def _sample(text, name):
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_received_rejected_and_open_incidents(client, am,
                                                             django_capture_on_commit_callbacks):
    from opsplane import metrics

    _integration, token = am
    rejected = 'opsplane_alerts_rejected_requests_total{reason="unauthenticated"}'
    firing = 'opsplane_alerts_received_total{integration="am",status="firing"}'
    before = metrics.render().decode()
    post(client, "alt_bad", fixture("webhook-v4-01.json"))
    with django_capture_on_commit_callbacks(execute=True):
        post(client, token, fixture("webhook-v4-01.json"))
    after = metrics.render().decode()
    assert _sample(after, rejected) == _sample(before, rejected) + 1
    assert _sample(after, firing) == _sample(before, firing) + 2
    assert 'opsplane_alerts_open_incidents{severity="critical"} 1.0' in after
    assert 'opsplane_alerts_open_incidents{severity="info"} 0.0' in after


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_store_each_alert_once(admin_user):
    """Several requests with the same new alerts at once: one row per alert, one
    incident, one "fired" event each; the losers of the races retry."""
    import threading

    from django.db import connection

    from alerts import intake, payloads

    integration, _token = make_integration(admin_user)
    body = json.dumps(am_payload([am_alert({"alertname": "Storm", "instance": f"h{i}"})
                                  for i in range(20)])).encode()
    errors = []

    def send():
        try:
            now = timezone.now()
            _envelope, items = payloads.parse_body("alertmanager", body, now)
            intake.ingest(integration, items, now=now)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Alert.objects.count() == 20 and Incident.objects.count() == 1
    assert AlertEvent.objects.filter(kind="fired").count() == 20
    assert Receipt.objects.count() == 4


# --- the intake under ASGI: beside Django's middleware (alerts.api.IntakeApp) ---------------


@pytest.fixture
def asgi(monkeypatch):
    """POST through the real ASGI application (``opsplane.asgi``) as uvicorn would; the
    intake's database work runs on a thread of its own, hence ``transaction=True`` in
    the tests that use this. Returns ``send(path, body, headers=(), chunks=None)`` ->
    (status, {header: value}, body)."""
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import async_to_sync
    from channels.testing import ApplicationCommunicator

    from alerts import api
    from opsplane.asgi import application

    db_thread = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(api, "_DB_THREADS", db_thread)

    async def exchange(scope, messages):
        communicator = ApplicationCommunicator(application, scope)
        for message in messages:
            await communicator.send_input(message)
        start = await communicator.receive_output(5)
        body = b""
        while True:
            message = await communicator.receive_output(5)
            body += message["body"]
            if not message.get("more_body"):
                break
        await communicator.wait(5)
        return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body

    def send(path, body=b"", headers=(), *, method="POST", chunks=None, host=b"127.0.0.1"):
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = [(b"host", host), (b"content-type", b"application/json"),
                   *((k.encode(), v.encode()) for k, v in headers)]
        if chunks is None:
            headers.append((b"content-length", str(len(body)).encode()))
            messages = [{"type": "http.request", "body": body}]
        else:  # no Content-Length: the body arrives in pieces
            messages = [{"type": "http.request", "body": body[i:i + chunks], "more_body": True}
                        for i in range(0, len(body), chunks)]
            messages.append({"type": "http.request", "body": b""})
        scope = {"type": "http", "http_version": "1.1", "method": method, "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "scheme": "http", "headers": headers, "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 8000)}
        return async_to_sync(exchange)(scope, messages)

    yield send
    _close_connections(db_thread, 1)


def _close_connections(threads, count):
    """Close the database connection of each of the ``count`` threads of ``threads`` (the
    test database cannot be dropped while they are open)."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(count)

    def close():
        connection.close()
        barrier.wait(10)  # so that each thread takes one of these

    for future in [threads.submit(close) for _ in range(count)]:
        future.result()
    threads.shutdown()


@pytest.mark.django_db(transaction=True)
def test_asgi_intake_commits_before_it_answers(asgi, admin_user):
    _integration, token = make_integration(admin_user)
    status, headers, body = asgi("/api/v1/alerts/intake/", fixture("webhook-v4-01.json"),
                                 [("Authorization", f"Bearer {token}")])
    assert status == 200, body
    assert json.loads(body) | {"receipt": 0} == {
        "status": "ok", "receipt": 0, "alerts": 2, "new": 2, "firing": 2, "resolved": 0,
        "refired": 0, "incidents_opened": 1}
    # Committed by the intake's own connection before the answer: this one sees it all.
    assert Alert.objects.count() == 2 and Incident.objects.count() == 1
    assert AlertEvent.objects.filter(kind="fired").count() == 2
    assert Receipt.objects.get().pk == json.loads(body)["receipt"]
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in headers  # no session, no CSRF cookie
    # The token in the URL works the same.
    status, _headers, body = asgi(f"/api/v1/alerts/intake/{token}/",
                                  fixture("webhook-v4-03.json"))
    assert status == 200 and json.loads(body)["resolved"] == 1


@pytest.mark.django_db(transaction=True)
def test_asgi_intake_refuses_as_the_view_does_and_stores_nothing(asgi, admin_user, settings):
    integration, token = make_integration(admin_user)
    bearer = [("Authorization", f"Bearer {token}")]
    good = fixture("webhook-v4-01.json")
    status, headers, _ = asgi("/api/v1/alerts/intake/", good)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert asgi("/api/v1/alerts/intake/alt_00000000_nope/", good)[0] == 401
    assert asgi("/api/v1/alerts/intake/", good, [("Authorization", f"Bearer {token}x")])[0] == 401
    status, _, body = asgi("/api/v1/alerts/intake/", b'{"alerts": [{"labels": {}}]}', bearer)
    assert status == 400
    assert json.loads(body)["errors"][0]["path"] == "alerts[0].labels"
    settings.OPSPLANE_ALERTS_MAX_BODY_BYTES = 4096
    big = am_payload([am_alert({"alertname": "A", "x": "y" * 5000})])
    assert asgi("/api/v1/alerts/intake/", big, bearer)[0] == 413  # by Content-Length
    assert asgi("/api/v1/alerts/intake/", big, bearer, chunks=1000)[0] == 413  # by reading
    Integration.objects.filter(pk=integration.pk).update(enabled=False)
    assert asgi("/api/v1/alerts/intake/", good, bearer)[0] == 403
    _nothing_stored()
    Integration.objects.filter(pk=integration.pk).update(enabled=True)
    assert asgi("/api/v1/alerts/intake/", good, bearer, chunks=100)[0] == 200
    assert Alert.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_asgi_intake_skips_djangos_request_cycle_and_nothing_else(asgi, admin_user):
    from django.core.signals import request_started

    _integration, token = make_integration(admin_user)
    bearer = [("Authorization", f"Bearer {token}")]
    started = []

    def count(**_kwargs):
        started.append(1)

    request_started.connect(count)
    try:
        status, _headers, _body = asgi("/api/v1/alerts/intake/", b"{}", bearer)
        assert status == 400 and started == []  # answered beside Django's request cycle
        # Django's answers: DRF's 405, the Host check's 400, an ordinary page.
        status, headers, _ = asgi("/api/v1/alerts/intake/", method="GET", headers=bearer)
        assert status == 405 and "POST" in headers["allow"]
        assert asgi("/api/v1/alerts/intake/", fixture("webhook-v4-01.json"), bearer,
                    host=b"evil.example")[0] == 400
        assert asgi("/healthz", method="GET")[0] == 200
        assert len(started) == 3
    finally:
        request_started.disconnect(count)
    _nothing_stored()


@pytest.mark.django_db(transaction=True)
def test_asgi_concurrent_single_alert_requests_all_stored(asgi, admin_user, monkeypatch):
    """Many single-alert requests at once on one event loop, four intake threads: every
    request answered 200 is in the database."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import async_to_sync
    from channels.testing import HttpCommunicator

    from alerts import api
    from opsplane.asgi import application

    threads = ThreadPoolExecutor(max_workers=4)
    monkeypatch.setattr(api, "_DB_THREADS", threads)
    _integration, token = make_integration(admin_user)
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]

    async def one(i):
        body = json.dumps(am_payload([am_alert({"alertname": "One", "instance": f"h{i}"})]))
        return await HttpCommunicator(application, "POST", "/api/v1/alerts/intake/",
                                      body.encode(), headers).get_response(timeout=30)

    async def many():
        return await asyncio.gather(*(one(i) for i in range(40)))

    try:
        answers = async_to_sync(many)()
    finally:
        _close_connections(threads, 4)
    assert [a["status"] for a in answers] == [200] * 40
    assert Alert.objects.count() == 40 and Receipt.objects.count() == 40
    assert Incident.objects.count() == 1  # one group: alertname


def test_a_single_alert_request_costs_few_statements(am, django_assert_num_queries):
    """The intake's hot path, pinned: the integration and the routing versions in one
    query; the receipt with the lock of the stored alerts; the insert (the CMDB host
    found inside it); the open incident; its link with the event (BEGIN and COMMIT
    around the last four in production). SQLite takes two statements more."""
    from django.db import connection

    from alerts import api

    _integration, token = am
    headers = {"Content-Type": "application/json"}

    def body(i):
        return json.dumps(am_payload([am_alert({"alertname": "Q", "instance": f"q{i}:9100"})]))

    for i in range(2):  # the first opens the incident and stamps last_seen_at
        assert api.receive(token, body(i).encode(), headers, "").status_code == 200
    with django_assert_num_queries(5 if connection.vendor == "postgresql" else 7):
        response = api.receive(token, body(2).encode(), headers, "")
    assert response.status_code == 200 and json.loads(response.content)["new"] == 1


@pytest.mark.django_db(transaction=True)
def test_asgi_intake_failure_is_a_500_that_does_not_log_the_token(asgi, admin_user,
                                                                  monkeypatch, caplog):
    from alerts import intake

    _integration, token = make_integration(admin_user)

    def broken(*_args, **_kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(intake, "ingest", broken)
    status, _headers, body = asgi(f"/api/v1/alerts/intake/{token}/",
                                  fixture("webhook-v4-01.json"))
    assert status == 500 and json.loads(body) == {"detail": "Internal error."}
    assert "database gone" in caplog.text and token not in caplog.text
