"""Incident actions (alerts/incidents.py) and their entry points: acknowledge,
unacknowledge, resolve and snooze are compare-and-set (an ack racing a resolve under
real PostgreSQL never un-resolves), audited with who and via; the incident list acts
over htmx; the API; the signed one-click links (GET changes nothing; expired, tampered
or outdated links are refused; a replay is harmless); escalation policy pages and API;
role checks on every endpoint."""

import re
import threading
import time as pytime

import pytest
from django.core import signing
from django.db import close_old_connections, connection

from alerts import escalation, incidents, states
from alerts import metrics as alert_metrics
from alerts.models import EscalationPolicy, EscalationStep, Incident, IncidentEvent
from alerts.testing import am_alert, am_payload, make_integration, post
from opsplane.models import AuditEvent

S = Incident.Status
K = EscalationStep.Kind


def new_incident(client, admin, name="HighCPU", token=None):
    if token is None:
        _integration, token = make_integration(admin)
    labels = {"alertname": name, "instance": "web-1:9100", "severity": "critical"}
    assert post(client, token, am_payload([am_alert(labels)])).status_code == 200
    return Incident.objects.get(title__startswith=name, status=S.TRIGGERED), token


# --- the actions ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_actions_move_the_incident_and_are_audited(client, admin_user, oncall,
                                                   django_capture_on_commit_callbacks):
    incident, _token = new_incident(client, admin_user)
    acks = alert_metrics.acknowledgements.labels(via="api")._value.get()
    with django_capture_on_commit_callbacks(execute=True):
        incidents.acknowledge(incident, oncall, via="api", timeout=15)
    assert incident.status == S.ACKNOWLEDGED and incident.acknowledged_by == oncall
    assert incident.ack_until is not None
    assert alert_metrics.acknowledgements.labels(via="api")._value.get() == acks + 1
    with pytest.raises(incidents.AlreadyDone, match="already acknowledged by oncall"):
        incidents.acknowledge(incident, oncall, via="board")
    incidents.unacknowledge(incident, oncall, via="board")
    # A new cycle (no policy applies here, so nothing is due).
    assert incident.status == S.TRIGGERED and incident.escalation_cycle == 1
    incidents.snooze(incident, oncall, minutes=20, via="board")
    assert incident.status == S.ACKNOWLEDGED and incident.snoozed_until is not None
    incidents.snooze(incident, oncall, minutes=40, via="board")  # a longer snooze
    incidents.resolve(incident, oncall, via="page")
    incident.refresh_from_db()
    assert incident.status == S.RESOLVED and incident.snoozed_until is None
    with pytest.raises(states.TransitionError, match="resolved"):
        incidents.acknowledge(incident, oncall, via="link")
    with pytest.raises(incidents.AlreadyDone):
        incidents.resolve(incident, oncall, via="page")
    kinds = list(IncidentEvent.objects.filter(incident=incident, actor=oncall)
                 .values_list("kind", "detail__via"))
    assert kinds == [("acknowledged", "api"), ("unacknowledged", "board"),
                     ("snoozed", "board"), ("snoozed", "board"), ("resolved", "page")]
    audit = list(AuditEvent.objects.filter(object_type="alerts.incident", actor=oncall)
                 .order_by("pk").values_list("action", "detail__via"))
    assert audit == [("incident.acknowledged", "api"), ("incident.triggered", "board"),
                     ("incident.acknowledged", "board"), ("incident.snoozed", "board"),
                     ("incident.resolved", "page")]


@pytest.mark.django_db
def test_actions_check_the_role_and_the_numbers(client, admin_user, operator, oncall):
    from django.core.exceptions import PermissionDenied, ValidationError

    incident, _token = new_incident(client, admin_user)
    for act, options in ((incidents.acknowledge, {}), (incidents.resolve, {}),
                         (incidents.snooze, {"minutes": 5})):
        with pytest.raises(PermissionDenied):
            act(incident, operator, via="api", **options)
    with pytest.raises(ValidationError):
        incidents.snooze(incident, oncall, minutes=0, via="api")
    with pytest.raises(ValidationError):
        incidents.acknowledge(incident, oncall, via="api", timeout="soon")
    assert Incident.objects.get(pk=incident.pk).status == S.TRIGGERED


@pytest.mark.django_db(transaction=True)
def test_concurrent_ack_and_resolve_never_unresolve(client, admin_user, oncall, make_user):
    """Two threads, two connections, real PostgreSQL: an ack and a resolve released at
    the same instant, twenty times. Every incident ends resolved; an ack that lost gets
    a clear error, one that won is followed by the resolve."""
    assert connection.vendor == "postgresql"
    other = make_user("oncall")
    _integration, token = make_integration(admin_user)
    outcomes = []
    for round_ in range(20):
        incident, _token = new_incident(client, admin_user, name=f"Race{round_}", token=token)
        barrier = threading.Barrier(2)
        results = {}

        def act(name, function, user, pk=incident.pk, results=results, barrier=barrier):
            try:
                target = Incident.objects.get(pk=pk)  # both read "triggered"
                barrier.wait(timeout=10)
                function(target, user, via="api")
                results[name] = "ok"
            except states.TransitionError as exc:
                results[name] = str(exc)
            finally:
                close_old_connections()

        threads = [threading.Thread(target=act, args=("ack", incidents.acknowledge, oncall)),
                   threading.Thread(target=act, args=("resolve", incidents.resolve, other))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        final = Incident.objects.get(pk=incident.pk)
        assert final.status == S.RESOLVED, (round_, results)
        assert results["resolve"] == "ok", results
        if results["ack"] != "ok":
            assert "resolved" in results["ack"] and "cannot become" in results["ack"]
        outcomes.append(results["ack"] == "ok")
        assert final.next_escalation_at is None and final.ack_until is None
    assert len(outcomes) == 20


# --- the incident list (htmx) and the API ------------------------------------------------


@pytest.mark.django_db
def test_incident_list_acts_over_htmx(client, admin_user, oncall):
    incident, token = new_incident(client, admin_user)
    client.force_login(oncall)
    page = client.get("/alerts/incidents/")
    assert f'hx-post="/alerts/incidents/{incident.pk}/acknowledge/"'.encode() in page.content
    # Resolving asks first, naming the incident.
    assert (f'hx-confirm="Resolve incident #{incident.pk} “{incident.title}”? Its '
            "notifications and escalation stop.").encode() in page.content
    row = client.post(f"/alerts/incidents/{incident.pk}/acknowledge/", HTTP_HX_REQUEST="true")
    assert row.status_code == 200
    assert row.content.lstrip().startswith(f'<tr id="incident-{incident.pk}"'.encode())
    assert b"<html" not in row.content and b"Unacknowledge" in row.content
    assert Incident.objects.get(pk=incident.pk).status == S.ACKNOWLEDGED
    again = client.post(f"/alerts/incidents/{incident.pk}/acknowledge/",
                        HTTP_HX_REQUEST="true")
    assert b"already acknowledged" in again.content
    client.post(f"/alerts/incidents/{incident.pk}/resolve/", HTTP_HX_REQUEST="true")
    assert Incident.objects.get(pk=incident.pk).status == S.RESOLVED
    # Without htmx: back to the incident.
    other, _token = new_incident(client, admin_user, name="Other", token=token)
    plain = client.post(f"/alerts/incidents/{other.pk}/snooze/", {"minutes": "30"})
    assert plain.status_code == 302 and plain["Location"] == f"/alerts/incidents/{other.pk}/"
    assert Incident.objects.get(pk=other.pk).snoozed_until is not None


@pytest.mark.django_db
def test_api_actions(client, admin_user, oncall):
    incident, _token = new_incident(client, admin_user)
    client.force_login(oncall)
    base = f"/api/v1/alerts/incidents/{incident.pk}"
    ack = client.post(f"{base}/acknowledge/", {"timeout_minutes": 30},
                      content_type="application/json")
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    assert Incident.objects.get(pk=incident.pk).ack_until is not None
    assert client.post(f"{base}/acknowledge/").status_code == 409
    assert client.post(f"{base}/snooze/", {}, content_type="application/json") \
        .status_code == 400
    snooze = client.post(f"{base}/snooze/", {"minutes": 60}, content_type="application/json")
    assert snooze.status_code == 200
    assert client.post(f"{base}/resolve/").json()["status"] == "resolved"
    assert client.post(f"{base}/acknowledge/").status_code == 409
    assert IncidentEvent.objects.filter(incident=incident, detail__via="api").count() == 3


# --- signed links ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_signed_links_refuse_expired_tampered_outdated(client, admin_user, oncall, settings,
                                                      monkeypatch):
    incident, _token = new_incident(client, admin_user)
    incident.escalation_cycle = 1
    Incident.objects.filter(pk=incident.pk).update(escalation_cycle=1)
    token = escalation.sign_link(incident, "acknowledge", oncall)
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    response = client.post(f"/alerts/link/{tampered}/")
    assert response.status_code == 400 and b"not valid" in response.content

    two_days_ago = pytime.time() - 2 * 86400
    with monkeypatch.context() as m:
        m.setattr(signing.time, "time", lambda: two_days_ago)
        old = escalation.sign_link(incident, "acknowledge", oncall)
    response = client.post(f"/alerts/link/{old}/")
    assert response.status_code == 403 and b"expired" in response.content

    Incident.objects.filter(pk=incident.pk).update(escalation_cycle=2)
    response = client.post(f"/alerts/link/{token}/")
    assert response.status_code == 403 and b"earlier escalation" in response.content
    assert Incident.objects.get(pk=incident.pk).status == S.TRIGGERED

    # A person who lost the role cannot act through a link that names them.
    incident.escalation_cycle = 2
    fresh = escalation.sign_link(incident, "acknowledge", oncall)
    oncall.groups.clear()
    response = client.post(f"/alerts/link/{fresh}/")
    assert response.status_code == 403
    assert Incident.objects.get(pk=incident.pk).status == S.TRIGGERED


@pytest.mark.django_db
def test_resolve_link_and_replay(client, admin_user, oncall):
    incident, _token = new_incident(client, admin_user)
    path = f"/alerts/link/{escalation.sign_link(incident, 'resolve', oncall)}/"
    assert client.get(path).status_code == 200
    assert Incident.objects.get(pk=incident.pk).status == S.TRIGGERED
    assert b"resolved" in client.post(path).content
    assert Incident.objects.get(pk=incident.pk).status == S.RESOLVED
    replay = client.post(path)
    assert replay.status_code == 200 and b"already resolved" in replay.content
    ack_path = f"/alerts/link/{escalation.sign_link(incident, 'acknowledge', oncall)}/"
    assert b"already resolved" in client.post(ack_path).content  # an ack never un-resolves
    assert Incident.objects.get(pk=incident.pk).status == S.RESOLVED


@pytest.mark.django_db
def test_channel_link_needs_a_login_and_csrf(client, admin_user, oncall):
    from django.test import Client

    incident, _token = new_incident(client, admin_user)
    path = f"/alerts/link/{escalation.sign_link(incident, 'acknowledge')}/"
    anonymous = client.get(path)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(oncall)
    assert strict.post(path).status_code == 403  # no CSRF token
    page = strict.get(path)
    csrf = page.context["csrf_token"]
    done = strict.post(path, {"csrfmiddlewaretoken": str(csrf)})
    assert done.status_code == 200
    incident.refresh_from_db()
    assert incident.status == S.ACKNOWLEDGED and incident.acknowledged_by == oncall


# --- policies: pages and API ---------------------------------------------------------------------


@pytest.mark.django_db
def test_policy_form_over_htmx(client, admin_user, oncall):
    client.force_login(admin_user)
    data = {"name": "primary", "description": "", "repeat": "1",
            "steps-TOTAL_FORMS": "2", "steps-INITIAL_FORMS": "0",
            "steps-MIN_NUM_FORMS": "0", "steps-MAX_NUM_FORMS": "50",
            "steps-0-kind": "user", "steps-0-user": str(oncall.pk),
            "steps-1-kind": ""}
    bad = client.post("/alerts/escalation/new/", data, HTTP_HX_REQUEST="true")
    assert bad.status_code == 200 and b"<html" not in bad.content
    assert b'id="policy-form"' in bad.content and b"needs a wait step" in bad.content
    assert not EscalationPolicy.objects.exists()
    data.update({"steps-1-kind": "wait", "steps-1-wait_minutes": "10"})
    good = client.post("/alerts/escalation/new/", data, HTTP_HX_REQUEST="true")
    policy = EscalationPolicy.objects.get()
    assert good["HX-Redirect"] == f"/alerts/escalation/{policy.pk}/"
    assert [(s.kind, s.user, s.wait_minutes) for s in policy.steps.all()] == [
        ("user", oncall, 0), ("wait", None, 10)]
    listing = client.get("/alerts/escalation/")
    assert b"primary" in listing.content and oncall.username.encode() in listing.content


@pytest.mark.django_db
def test_policy_api_crud(client, admin_user, oncall, make_user):
    from opsplane.notify.testing import make_channel

    make_channel("webhook", name="ops", url="http://127.0.0.1:9/x")
    client.force_login(admin_user)
    body = {"name": "db", "repeat": 2, "steps": [
        {"kind": "user", "user": oncall.username}, {"kind": "wait", "wait_minutes": 5},
        {"kind": "channel", "channel": "ops"}]}
    created = client.post("/api/v1/alerts/escalation-policies/", body,
                          content_type="application/json")
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    got = client.get(f"/api/v1/alerts/escalation-policies/{pk}/").json()
    assert got["steps"] == body["steps"] and got["repeat"] == 2
    body["steps"] = [{"kind": "user", "user": "nobody"}]
    assert client.put(f"/api/v1/alerts/escalation-policies/{pk}/", body,
                      content_type="application/json").status_code == 400
    body["steps"] = [{"kind": "user", "user": oncall.username}]
    refused = client.put(f"/api/v1/alerts/escalation-policies/{pk}/", body,
                         content_type="application/json")
    assert refused.status_code == 400 and "wait step" in str(refused.json())
    body["repeat"] = 0
    assert client.put(f"/api/v1/alerts/escalation-policies/{pk}/", body,
                      content_type="application/json").status_code == 200
    assert EscalationPolicy.objects.get(pk=pk).steps.count() == 1
    assert client.delete(f"/api/v1/alerts/escalation-policies/{pk}/").status_code == 204
    assert not EscalationPolicy.objects.exists()


# --- roles: every endpoint ----------------------------------------------------------------------


@pytest.fixture
def world(client, admin_user):
    incident, _token = new_incident(client, admin_user)
    policy = escalation.save_policy(EscalationPolicy(), {"name": "p", "repeat": 0},
                                    [{"kind": K.WAIT, "wait_minutes": 5}], by=admin_user)
    return {"incident": incident, "policy": policy}


PAGES = [("/alerts/escalation/", {"oncall", "operator", "admin"}),
         ("/alerts/escalation/{policy}/", {"oncall", "operator", "admin"}),
         ("/alerts/escalation/new/", {"admin"}),
         ("/alerts/escalation/contact/", {"oncall", "operator", "admin"})]


@pytest.mark.parametrize("role", ["oncall", "operator", "approver", "admin", None])
def test_pages_for_each_role(client, world, make_user, role):
    client.force_login(make_user(role))
    for template, allowed in PAGES:
        response = client.get(template.format(**{k: v.pk for k, v in world.items()}))
        assert response.status_code == (200 if role in allowed else 403), (template, role)


@pytest.mark.parametrize("role", ["oncall", "operator", "approver", "admin", None])
def test_writes_for_each_role(client, world, make_user, role):
    incident, policy = world["incident"], world["policy"]
    user = make_user(role)
    client.force_login(user)
    acting = role in ("oncall", "admin")
    posts = [(f"/alerts/incidents/{incident.pk}/snooze/", {"minutes": "5"}, acting),
             (f"/alerts/incidents/{incident.pk}/unacknowledge/", {}, acting),
             (f"/alerts/incidents/{incident.pk}/resolve/", {}, acting),
             (f"/alerts/escalation/{policy.pk}/", {
                 "name": "x", "repeat": "0", "steps-TOTAL_FORMS": "1",
                 "steps-INITIAL_FORMS": "0", "steps-0-kind": "user",
                 "steps-0-user": str(user.pk)}, role == "admin"),
             (f"/alerts/escalation/{policy.pk}/delete/", {}, role == "admin")]
    for path, data, allowed in posts:
        response = client.post(path, data)
        assert response.status_code == (302 if allowed else 403), (path, role,
                                                                   response.status_code)
    assert Incident.objects.get(pk=incident.pk).status == (S.RESOLVED if acting
                                                           else S.TRIGGERED)
    assert EscalationPolicy.objects.exists() == (role != "admin")


API_ROLES = {"oncall": {"read", "act"}, "admin": {"read", "act", "admin"},
             "operator": {"read"}, "approver": set(), None: set()}


@pytest.mark.parametrize("role", list(API_ROLES))
def test_api_for_each_role(client, world, make_user, role):
    incident, policy = world["incident"], world["policy"]
    client.force_login(make_user(role))
    calls = [
        ("get", "/api/v1/alerts/escalation-policies/", None, "read"),
        ("get", f"/api/v1/alerts/escalation-policies/{policy.pk}/", None, "read"),
        ("post", "/api/v1/alerts/escalation-policies/",
         {"name": "n", "steps": [{"kind": "wait", "wait_minutes": 1}]}, "admin"),
        ("put", f"/api/v1/alerts/escalation-policies/{policy.pk}/",
         {"name": "p2", "steps": [{"kind": "wait", "wait_minutes": 2}]}, "admin"),
        ("post", f"/api/v1/alerts/incidents/{incident.pk}/snooze/", {"minutes": 5}, "act"),
        ("post", f"/api/v1/alerts/incidents/{incident.pk}/unacknowledge/", None, "act"),
        ("post", f"/api/v1/alerts/incidents/{incident.pk}/resolve/", None, "act"),
        ("delete", f"/api/v1/alerts/escalation-policies/{policy.pk}/", None, "admin"),
    ]
    for method, path, data, need in calls:
        response = getattr(client, method)(path, data, content_type="application/json")
        if need in API_ROLES[role]:
            assert response.status_code in (200, 201, 204), (path, response.content)
        else:
            assert response.status_code == 403, (path, role, response.status_code)


@pytest.mark.django_db
def test_contact_page(client, oncall, admin_user):
    from opsplane.notify.testing import make_channel

    channel = make_channel("dingtalk", name="ding", url="http://127.0.0.1:9/robot")
    client.force_login(oncall)
    response = client.post("/alerts/escalation/contact/", {
        "mobile": "13800000001", "email": "", "chat_id": "", "channels": [channel.pk]})
    assert response.status_code == 302
    contact = oncall.oncall_contact
    assert contact.mobile == "13800000001" and list(contact.channels.all()) == [channel]
    assert escalation.handles(contact, oncall, "dingtalk") == ("13800000001",)
    assert client.get(f"/alerts/escalation/contact/?user={admin_user.username}") \
        .status_code == 403
    client.force_login(admin_user)
    assert client.get(f"/alerts/escalation/contact/?user={oncall.username}") \
        .status_code == 200



# --- in a browser ---------------------------------------------------------------------------------


def test_incident_list_acks_in_a_browser_without_a_reload(page, client, admin_user, oncall,
                                                          screenshots):
    from playwright.sync_api import expect

    from opsplane.testing.fixtures import login

    incident, _token = new_incident(client, admin_user)
    login(page, oncall)
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.goto("/alerts/incidents/")
    page.evaluate("window.__sameDocument = true")
    row = page.locator(f"#incident-{incident.pk}")
    expect(row).to_contain_text("triggered")
    row.get_by_role("button", name="Acknowledge").click()
    expect(row).to_contain_text("acknowledged", timeout=10_000)
    expect(row.get_by_role("button", name="Unacknowledge")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    assert Incident.objects.get(pk=incident.pk).acknowledged_by == oncall
    page.screenshot(path=screenshots / "incident-list-acknowledged.png")


def test_policy_form_in_a_browser_shows_errors_in_place(page, make_user, oncall, screenshots):
    from playwright.sync_api import expect

    from opsplane.testing.fixtures import login

    login(page, make_user("admin"))
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.goto("/alerts/escalation/new/")
    page.evaluate("window.__sameDocument = true")
    page.fill("#id_name", "primary")
    page.fill("#id_repeat", "2")
    page.select_option("#id_steps-0-kind", "user")
    page.select_option("#id_steps-0-user", label=oncall.username)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#policy-form .form-error")).to_contain_text("needs a wait step")
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=screenshots / "escalation-policy-errors.png", full_page=True)
    page.select_option("#id_steps-1-kind", "wait")
    page.fill("#id_steps-1-wait_minutes", "10")
    page.get_by_role("button", name="Save").click()
    policy_url = re.compile(r".*/alerts/escalation/\d+/$")
    page.wait_for_url(policy_url)
    expect(page.locator(".message.success")).to_contain_text("primary")
    assert EscalationPolicy.objects.get().steps.count() == 2
