"""Alert pages and the REST API: who may see and do what (every view and endpoint),
the YAML editor and its errors, the import, the test console (htmx), one-click
silences, integrations with a token shown once, the host panel, pinned query counts."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts import services
from alerts.models import Alert, Incident, Integration, RoutingConfig, Silence
from alerts.testing import am_alert, am_payload, fixture, make_integration, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(client, admin_user):
    """An integration, the captured payloads posted, so every page has something."""
    integration, token = make_integration(admin_user)
    for name in ("webhook-v4-01.json", "webhook-v4-02.json"):
        assert post(client, token, fixture(name)).status_code == 200
    return {"integration": integration, "token": token, "alert": Alert.objects.first(),
            "incident": Incident.objects.first()}


PAGES = ["/alerts/", "/alerts/{alert}/", "/alerts/incidents/", "/alerts/incidents/{incident}/",
         "/alerts/routes/", "/alerts/routes/test/", "/alerts/silences/",
         "/alerts/integrations/", "/alerts/integrations/{integration}/"]
READERS = {"oncall": 200, "operator": 200, "admin": 200, "approver": 403, None: 403}


def _path(template, world):
    return template.format(alert=world["alert"].pk, incident=world["incident"].pk,
                           integration=world["integration"].pk,
                           silence=world.get("silence", 0))


@pytest.mark.parametrize("role", list(READERS))
def test_pages_for_each_role(client, world, make_user, role):
    client.force_login(make_user(role))
    for template in PAGES:
        response = client.get(_path(template, world))
        assert response.status_code == READERS[role], template


@pytest.mark.parametrize(("path", "allowed"), [
    ("/alerts/routes/import/", {"oncall", "admin"}),
    ("/alerts/silences/new/", {"oncall", "admin"}),
    ("/alerts/integrations/new/", {"admin"}),
])
def test_editing_pages_for_each_role(client, make_user, path, allowed):
    for role in ("oncall", "operator", "admin", "approver"):
        client.force_login(make_user(role))
        assert client.get(path).status_code == (200 if role in allowed else 403), (path, role)


def test_anonymous_pages_redirect_and_api_answers_401(client, world):
    for template in PAGES:
        response = client.get(_path(template, world))
        assert response.status_code == 302 and "/login/" in response["Location"]
    for path in ("/api/v1/alerts/", "/api/v1/alerts/incidents/", "/api/v1/alerts/silences/",
                 "/api/v1/alerts/routing/"):
        assert client.get(path).status_code in (401, 403), path


POSTS = [
    # (path template, data, roles allowed)
    ("/alerts/{alert}/silence/", {"hours": "2", "comment": ""}, {"oncall", "admin"}),
    ("/alerts/silences/new/", {"matchers": 'alertname="X"', "hours": "1", "comment": "c"},
     {"oncall", "admin"}),
    ("/alerts/silences/{silence}/expire/", {}, {"oncall", "admin"}),
    ("/alerts/incidents/{incident}/acknowledge/", {}, {"oncall", "admin"}),
    ("/alerts/incidents/{incident}/unacknowledge/", {}, {"oncall", "admin"}),
    ("/alerts/routes/import/", {"alertmanager_yml": "route: {}\n"}, {"oncall", "admin"}),
    ("/alerts/routes/test/", {"labels": "a=b"}, {"oncall", "admin", "operator"}),
    ("/alerts/integrations/{integration}/", {"name": "am", "kind": "alertmanager",
                                             "heartbeat_minutes": "0",
                                             "resolve_timeout_minutes": "0"}, {"admin"}),
    ("/alerts/routes/", {"source": "route: {group_by: [alertname]}\n", "save": "1"},
     {"oncall", "admin"}),
    ("/alerts/integrations/new/", {"name": "x", "kind": "generic", "heartbeat_minutes": "0",
                                   "resolve_timeout_minutes": "0"}, {"admin"}),
    ("/alerts/integrations/{integration}/rotate/", {}, {"admin"}),
]


@pytest.mark.parametrize("role", ["operator", "approver", "oncall", "admin"])
def test_writes_for_each_role(client, world, make_user, role, oncall):
    from alerts import matchers

    world["silence"] = services.create_silence(
        matchers.parse('alertname="Y"'), ends_at=timezone.now() + timedelta(hours=1),
        comment="existing", by=oncall).pk
    client.force_login(make_user(role))
    for template, data, allowed in POSTS:
        response = client.post(_path(template, world), data)
        if role in allowed:
            assert response.status_code in (200, 302), (template, response.status_code)
        else:
            assert response.status_code == 403, template
    if role in ("operator", "approver"):
        assert Silence.objects.count() == 1 and RoutingConfig.objects.count() == 0
        assert Silence.objects.get().state() == "active"


API = [
    ("get", "/api/v1/alerts/", None, "read"),
    ("get", "/api/v1/alerts/{alert}/", None, "read"),
    ("get", "/api/v1/alerts/incidents/", None, "read"),
    ("get", "/api/v1/alerts/incidents/{incident}/", None, "read"),
    ("get", "/api/v1/alerts/silences/", None, "read"),
    ("get", "/api/v1/alerts/routing/", None, "read"),
    ("post", "/api/v1/alerts/routing/test/", {"labels": {"alertname": "X"}}, "read"),
    ("post", "/api/v1/alerts/routing/import/", {"alertmanager_yml": "route: {}\n"}, "read"),
    ("post", "/api/v1/alerts/silences/", {"matchers": ['alertname="HighCPU"'],
                                          "ends_at": "2099-01-01T00:00:00Z",
                                          "comment": "window"}, "respond"),
    ("post", "/api/v1/alerts/incidents/{incident}/acknowledge/", None, "respond"),
    ("post", "/api/v1/alerts/incidents/{incident}/unacknowledge/", None, "respond"),
    ("get", "/api/v1/alerts/silences/{silence}/", None, "read"),
    ("delete", "/api/v1/alerts/silences/{silence}/", None, "respond"),
    ("put", "/api/v1/alerts/routing/", {"source": "route: {group_by: [alertname]}\n"},
     "respond"),
]
API_ROLES = {"oncall": {"read", "respond"}, "admin": {"read", "respond"},
             "operator": {"read"}, "approver": set(), None: set()}


@pytest.mark.parametrize("role", list(API_ROLES))
def test_api_for_each_role(client, world, make_user, role, oncall):
    from alerts import matchers

    world["silence"] = services.create_silence(
        matchers.parse('alertname="Y"'), ends_at=timezone.now() + timedelta(hours=1),
        comment="existing", by=oncall).pk
    client.force_login(make_user(role))
    for method, template, data, need in API:
        response = getattr(client, method)(_path(template, world), data,
                                           content_type="application/json")
        if need in API_ROLES[role]:
            assert response.status_code in (200, 201), (template, response.content)
        else:
            assert response.status_code == 403, (template, response.status_code)


def test_api_content(client, world, oncall):
    client.force_login(oncall)
    alerts = client.get("/api/v1/alerts/?status=firing&severity=critical").json()
    assert alerts["count"] == 2
    first = alerts["results"][0]
    high = Incident.objects.get(title__startswith="HighCPU")
    assert first["integration"] == "am" and first["incidents"] == [high.pk]
    detail = client.get(f"/api/v1/alerts/{first['id']}/").json()
    assert detail["events"][0]["kind"] == "fired" and "raw" in detail
    created = client.post("/api/v1/alerts/silences/", {
        "matchers": ['alertname="HighCPU"', 'instance=~"web-.*"'],
        "ends_at": (timezone.now() + timedelta(hours=1)).isoformat(), "comment": "deploy"},
        content_type="application/json")
    assert created.status_code == 201, created.content
    silence = created.json()
    assert silence["matchers"] == ['alertname="HighCPU"', 'instance=~"web-.*"']
    assert silence["state"] == "active" and silence["author"] == oncall.username
    assert Alert.objects.filter(silenced_by_id=silence["id"]).count() == 2
    bad = client.post("/api/v1/alerts/silences/", {"matchers": ['alertname=~"("'],
                                                   "ends_at": "2099-01-01T00:00:00Z",
                                                   "comment": "x"},
                      content_type="application/json")
    assert bad.status_code == 400 and "matchers" in bad.json()
    expired = client.delete(f"/api/v1/alerts/silences/{silence['id']}/")
    assert expired.status_code == 200 and expired.json()["state"] == "expired"
    test = client.post("/api/v1/alerts/routing/test/",
                       {"labels": {"alertname": "HighCPU", "cluster": "prod",
                                   "severity": "critical"}}, content_type="application/json")
    route = test.json()["routes"][0]
    assert route["channels"] == ["chat", "sms"]
    assert route["group_key"] == '{}:{alertname="HighCPU", cluster="prod"}'
    broken = client.put("/api/v1/alerts/routing/", {"source": "route: {group_wait: x}\n"},
                        content_type="application/json")
    assert broken.status_code == 400
    assert "route.group_wait" in json.dumps(broken.json())
    ack = client.post(f"/api/v1/alerts/incidents/{world['incident'].pk}/acknowledge/")
    assert ack.json()["status"] == "acknowledged"
    again = client.post(f"/api/v1/alerts/incidents/{world['incident'].pk}/acknowledge/")
    assert again.status_code == 409


def test_alert_list_query_count_is_constant(client, world, oncall, django_assert_num_queries):
    client.force_login(oncall)
    with django_assert_num_queries(7):
        client.get("/alerts/")
    post(client, world["token"], am_payload([am_alert({"alertname": f"N{i}", "instance":
                                                       f"h{i}:1"}) for i in range(30)]))
    with django_assert_num_queries(7):
        assert b"N29" in client.get("/alerts/").content
    with django_assert_num_queries(5):
        assert b"N29" in client.get("/alerts/incidents/").content


def test_yaml_editor_shows_errors_by_path_and_saves_versions(client, oncall):
    client.force_login(oncall)
    page = client.get("/alerts/routes/")
    assert b"severity_channels" in page.content  # the built-in default
    bad = client.post("/alerts/routes/", {"source": "route:\n  group_wait: soon\n  routes:\n"
                                                    "  - receiver: ghost\n", "save": "1"})
    html = bad.content.decode()
    assert "route.group_wait" in html and "route.routes[0].receiver" in html
    assert RoutingConfig.objects.count() == 0
    check = client.post("/alerts/routes/", {"source": "route: {receiver: team}\nreceivers: "
                                                      "[{name: team}]\n", "check": "1"})
    assert "No notification channel is named" in check.content.decode()
    assert RoutingConfig.objects.count() == 0
    saved = client.post("/alerts/routes/", {"source": "route: {group_by: [alertname]}\n",
                                            "comment": "simpler", "save": "1"})
    assert saved.status_code == 302
    assert RoutingConfig.objects.get().version == 1


def test_import_page_converts_and_reports(client, oncall):
    from test_alerts_routing import ALERTMANAGER_YML

    client.force_login(oncall)
    html = client.post("/alerts/routes/import/",
                       {"alertmanager_yml": ALERTMANAGER_YML}).content.decode()
    assert "Imported, not saved yet" in html
    assert "team-DB-pager" in html and "pagerduty_configs" in html
    assert "service_key" not in html
    assert RoutingConfig.objects.count() == 0
    bad = client.post("/alerts/routes/import/", {"alertmanager_yml": "route: {routes: "
                                                                     "[{receiver: ghost}]}\n"})
    assert "undefined receiver" in bad.content.decode()


def test_test_console_returns_only_the_partial_to_htmx(client, world, oncall):
    client.force_login(oncall)
    data = {"labels": 'alertname="HighCPU"\ncluster="prod"\nseverity="critical"'}
    full = client.post("/alerts/routes/test/", data)
    assert b"<html" in full.content and b"{}:{alertname" in full.content
    partial = client.post("/alerts/routes/test/", data, HTTP_HX_REQUEST="true")
    html = partial.content.decode()
    assert "<html" not in html and html.strip().startswith('<div id="result">')
    assert "HX-Request" in partial["Vary"]
    assert "chat" in html and "sms" in html
    yaml_input = client.post("/alerts/routes/test/", {"labels": "{alertname: X, severity: "
                                                                "info}"},
                             HTTP_HX_REQUEST="true").content.decode()
    assert "nobody (recorded only)" in yaml_input
    braces = client.post("/alerts/routes/test/", {"labels": '{alertname="X", cluster="eu"}'},
                         HTTP_HX_REQUEST="true").content.decode()
    assert 'cluster=&quot;eu&quot;' in braces
    wrong = client.post("/alerts/routes/test/", {"labels": 'a=~"x"'}, HTTP_HX_REQUEST="true")
    assert "Labels take = only" in wrong.content.decode()


def test_one_click_silence_from_an_alert(client, world, oncall):
    client.force_login(oncall)
    alert = world["alert"]
    page = client.get(f"/alerts/{alert.pk}/").content.decode()
    assert "Silence this alert" in page
    response = client.post(f"/alerts/{alert.pk}/silence/", {"hours": "4", "comment": ""})
    assert response.status_code == 302
    silence = Silence.objects.get()
    assert {tuple(m) for m in silence.matchers} == {
        (k, "=", v) for k, v in alert.labels.items()}
    assert silence.author == oncall.username
    alert.refresh_from_db()
    assert alert.silenced_by == silence
    page = client.get(f"/alerts/{alert.pk}/").content.decode()
    assert "Silenced by silence" in page and "Silence this alert" not in page
    listing = client.get("/alerts/?silenced=yes").content.decode()
    assert f"/alerts/{alert.pk}/" in listing
    assert client.post(f"/alerts/silences/{silence.pk}/expire/").status_code == 302
    assert Silence.objects.get().state() == "expired"


def test_silence_form_with_a_later_start(client, oncall):
    client.force_login(oncall)
    later = timezone.localtime(timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    response = client.post("/alerts/silences/new/", {
        "matchers": 'alertname="Backup"\nenv=~"prod|stage"', "starts_at": later,
        "hours": "4", "comment": "nightly backup window"})
    assert response.status_code == 302
    silence = Silence.objects.get()
    assert silence.state() == "pending"
    assert silence.matchers == [["alertname", "=", "Backup"], ["env", "=~", "prod|stage"]]
    assert (silence.ends_at - silence.starts_at) == timedelta(hours=4)
    assert "nightly backup window" in client.get("/alerts/silences/?state=pending").content \
        .decode()
    assert "nightly backup window" not in client.get("/alerts/silences/").content.decode()
    bad = client.post("/alerts/silences/new/", {"matchers": 'a=~".*"', "hours": "1",
                                                "comment": "x"})
    assert "would silence every alert" in bad.content.decode()


def test_integration_token_is_shown_once(client, admin_user):
    client.force_login(admin_user)
    response = client.post("/alerts/integrations/new/", {
        "name": "prom-eu", "kind": "alertmanager", "enabled": "on", "heartbeat_minutes": "0",
        "resolve_timeout_minutes": "0", "hmac_secret": "hush"})
    html = response.content.decode()
    integration = Integration.objects.get()
    token = html.split('id="intake-url">', 1)[1].split("</code>", 1)[0].rsplit("/", 2)[-2]
    assert token.startswith("alt_") and services.integration_for_token(token) == integration
    assert "webhook_configs" in html and integration.has_secret
    assert "hush" not in html and "hush" not in integration.hmac_secret
    later = client.get(f"/alerts/integrations/{integration.pk}/").content.decode()
    assert token not in later and f"alt_{integration.token_prefix}_" in later
    rotated = client.post(f"/alerts/integrations/{integration.pk}/rotate/").content.decode()
    assert token not in rotated and services.integration_for_token(token) is None


def test_alert_page_shows_the_host_its_services_and_recent_changes(client, world, oncall,
                                                                   operator):
    from changes.models import Change, HostResult, Run, Runbook, RunbookVersion
    from cmdb.models import Environment, Host, Service

    env = Environment.objects.create(name="prod")
    host = Host.objects.create(name="web-01", environment=env)
    Service.objects.create(name="storefront").hosts.add(host)
    runbook = Runbook.objects.create(name="deploy")
    version = RunbookVersion.objects.create(runbook=runbook, number=1, steps=[], digest="d")
    change = Change.objects.create(title="Deploy shop 4.2", runbook_version=version,
                                   selector="name=web-01", author=operator)
    run = Run.objects.create(change=change, number=1)
    HostResult.objects.create(run=run, host=host, host_name="web-01", state="ok")
    old = Change.objects.create(title="Ancient change", runbook_version=version,
                                selector="name=web-01", author=operator)
    old_run = Run.objects.create(change=old, number=1)
    Run.objects.filter(pk=old_run.pk).update(queued_at=timezone.now() - timedelta(days=2))
    HostResult.objects.create(run=old_run, host=host, host_name="web-01", state="ok")
    alert = Alert.objects.get(fingerprint="091b66da7a13e02d")  # instance web-01:9100
    client.force_login(oncall)
    html = client.get(f"/alerts/{alert.pk}/").content.decode()
    assert "/inventory/" in html and "web-01" in html and "storefront" in html
    assert "Deploy shop 4.2" in html and "Ancient change" not in html
