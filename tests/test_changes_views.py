"""Change pages: runbooks, composing with generated parameter fields, start, run page."""

import pytest

from approvals.testing import approve
from changes import services
from changes.models import Change, Run, Runbook
from cmdb.models import Environment, Host

pytestmark = pytest.mark.django_db

DEFINITION = """parameters:
  - name: service
    type: choice
    choices: [nginx, redis]
    required: true
  - name: token
    type: string
    secret: true
steps:
  - name: restart
    kind: shell
    command: echo {{ service }}
"""


@pytest.fixture
def runbook(operator):
    env = Environment.objects.create(name="prod", protected=True)
    for i in range(3):
        Host.objects.create(name=f"web-{i}", environment=env, labels={"role": "web"})
    return services.save_runbook(Runbook(), name="restart", description="Restart things",
                                 definition=DEFINITION, by=operator)


def test_runbook_form_shows_errors_by_field_path_and_keeps_the_text(client, operator):
    client.force_login(operator)
    html = client.post("/changes/runbooks/new/", {
        "name": "broken", "definition": "steps:\n  - kind: shell\n"}).content.decode()
    assert "steps[0].command: required" in html
    assert "kind: shell" in html
    assert not Runbook.objects.exists()


def test_picking_a_runbook_swaps_in_its_parameter_fields(client, operator, runbook):
    client.force_login(operator)
    response = client.get("/changes/new/", {"runbook": "restart"}, HTTP_HX_REQUEST="true",
                          HTTP_HX_TARGET="params")
    html = response.content.decode()
    assert "<html" not in html and 'id="params"' in html
    assert 'name="param_service"' in html and 'type="password"' in html


def test_compose_start_and_watch(client, operator, approver, runbook,
                                 django_capture_on_commit_callbacks):
    client.force_login(operator)
    response = client.post("/changes/new/", {
        "title": "Restart nginx", "runbook": "restart", "selector": "role=web",
        "parallelism": "2", "param_service": "nginx", "param_token": "s3cret",
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    change = Change.objects.get()
    assert change.status == Change.Status.PENDING_APPROVAL  # prod is protected
    approve(change, by=approver)
    detail = client.get(f"/changes/{change.pk}/").content.decode()
    assert "token = ********" in detail and "s3cret" not in detail
    assert "Run “Restart nginx” on 3 hosts (prod) now?" in detail
    with django_capture_on_commit_callbacks():  # do not queue a real task here
        response = client.post(f"/changes/{change.pk}/start/")
    run = Run.objects.get()
    assert response["Location"] == f"/changes/{change.pk}/runs/1/"
    page = client.get(f"/changes/{change.pk}/runs/1/").content.decode()
    assert "0 of 3 hosts done" in page and 'hx-trigger="every 2s"' in page
    partial = client.get(f"/changes/{change.pk}/runs/1/", HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b'id="hosts"' in partial.content
    # A second click does not start a second run.
    client.post(f"/changes/{change.pk}/start/")
    assert Run.objects.count() == 1 and run.number == 1


def test_compose_errors_stay_next_to_their_fields(client, operator, runbook):
    client.force_login(operator)
    html = client.post("/changes/new/", {
        "title": "x", "runbook": "restart", "selector": "role=db", "parallelism": "2",
        "param_service": "",
    }).content.decode()
    assert "No enabled host matches this selector." in html
    assert 'value="role=db"' in html
    assert not Change.objects.exists()


@pytest.mark.parametrize("role", ["approver", "oncall"])
def test_viewers_cannot_compose_or_start(client, make_user, operator, runbook, role):
    change = services.compose_change(title="t", runbook=runbook, selector="role=web",
                                     params={"service": "redis"}, by=operator)
    services.submit_change(change, by=operator)
    client.force_login(make_user(role))
    assert client.get(f"/changes/{change.pk}/").status_code == 200
    assert client.get("/changes/new/").status_code == 403
    assert client.post(f"/changes/{change.pk}/start/").status_code == 403
    assert not Run.objects.exists()


def test_change_api_round_trip(client, operator, approver, runbook,
                               django_capture_on_commit_callbacks):
    from opsplane import tokens

    _, token = tokens.create_token(operator, "ci", by=operator)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    created = client.post("/api/v1/changes/", {
        "title": "via api", "runbook": "restart", "selector": "role=web",
        "params": {"service": "nginx", "token": "abc"}, "strategy": {"parallelism": 5},
    }, content_type="application/json", **auth)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "pending_approval"  # prod is protected
    assert body["targets"] == ["web-0", "web-1", "web-2"]
    assert "token" not in body["params"]
    bad = client.post("/api/v1/changes/", {"title": "x", "runbook": "restart",
                                           "selector": "role in (", "params": {}},
                      content_type="application/json", **auth)
    assert bad.status_code == 400 and "selector" in bad.json()
    approve(Change.objects.get(pk=body["id"]), by=approver)
    with django_capture_on_commit_callbacks():
        started = client.post(f"/api/v1/changes/{body['id']}/start/", **auth)
    assert started.status_code == 202 and started.json()["status"] == "queued"
    again = client.post(f"/api/v1/changes/{body['id']}/start/", **auth)
    assert again.status_code == 409
    cancelled = client.post(f"/api/v1/changes/{body['id']}/runs/1/cancel/", **auth)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"


def test_cancel_asks_naming_the_change_and_how_many_hosts(client, operator, runbook):
    change = services.compose_change(title="Restart web", runbook=runbook, selector="role=web",
                                     params={"service": "nginx"}, by=operator)
    client.force_login(operator)
    html = client.get(f"/changes/{change.pk}/").content.decode()
    assert (f"Cancel change #{change.pk} “Restart web” on 3 hosts? Whatever has not run yet "
            "will not.") in html
