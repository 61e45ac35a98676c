"""Approval pages and API: role checks on every page and endpoint, the htmx decision, the
inbox, the change page's timeline, forms and imports."""

from datetime import time

import pytest
from django.contrib.auth.models import Group

from approvals import services
from approvals.models import (
    ApprovalPolicy,
    ApprovalRequest,
    Decision,
    FreezeWindow,
    MaintenanceWindow,
)
from approvals.testing import approve, host, request_of, subject
from changes import services as changes
from changes.models import Change, Runbook
from cmdb.models import Environment, Host

pytestmark = pytest.mark.django_db

ROLES = ["operator", "approver", "oncall", "admin", None]


@pytest.fixture
def setup(make_user):
    """A pending request by an operator, an emergency bypass to review, a policy and
    windows of each kind: something behind every URL."""
    author = make_user("operator", username="author")
    req = services.open_request(subject(author, host("web-1"), id="1"), by=author)
    other = services.open_request(subject(author, host("web-2"), id="2"), by=author)
    oncall = make_user("approver", username="firefighter")
    oncall.groups.add(Group.objects.get(name="emergency_approver"))
    bypass = services.emergency_bypass(other, by=oncall, reason="INC-1")
    ApprovalPolicy.objects.create(name="prod", requirements=[{"group": "approver",
                                                              "count": 1}])
    freeze = FreezeWindow.objects.create(name="f", kind="weekly", start_weekday=4,
                                         end_weekday=0, start_time=time(18),
                                         end_time=time(8))
    maintenance = MaintenanceWindow.objects.create(
        name="m", kind="weekly", start_weekday=5, end_weekday=5, start_time=time(1),
        end_time=time(5))
    return {"author": author, "req": req, "bypass": bypass, "freeze": freeze,
            "maintenance": maintenance}


READERS = {"operator", "approver", "oncall", "admin"}
PEOPLE = {"operator", "approver", "admin"}
APPROVERS = {"approver", "admin"}
ADMINS = {"admin"}

PAGES = [
    ("/approvals/", PEOPLE),
    ("/approvals/requests/", PEOPLE),
    ("/approvals/requests/{req}/", APPROVERS),  # and its author (below)
    ("/approvals/reviews/", APPROVERS),
    ("/approvals/policies/", READERS),
    ("/approvals/policies/new/", ADMINS),
    ("/approvals/policies/prod/", ADMINS),
    ("/approvals/policies/export/", READERS),
    ("/approvals/policies/import/", ADMINS),
    ("/approvals/freezes/", READERS),
    ("/approvals/freezes/new/", ADMINS),
    ("/approvals/freezes/{freeze}/", ADMINS),
    ("/approvals/maintenance/", READERS),
    ("/approvals/maintenance/new/", ADMINS),
    ("/approvals/maintenance/{maintenance}/", ADMINS),
    ("/approvals/calendar/", READERS),
]


def _path(template, setup):
    return template.format(req=setup["req"].pk, freeze=setup["freeze"].pk,
                           maintenance=setup["maintenance"].pk, bypass=setup["bypass"].pk)


@pytest.mark.parametrize("role", ROLES)
def test_every_page_checks_the_role(client, make_user, setup, role):
    client.force_login(make_user(role))
    for template, allowed in PAGES:
        path = _path(template, setup)
        expected = 200 if role in allowed else 403
        assert client.get(path).status_code == expected, (role, path)


POSTS = [
    # (path, data, role -> expected status); the services decide who may act
    ("/approvals/requests/{req}/decide/", {"kind": "approve"},
     {"approver": 302, "admin": 302, "operator": 403, "oncall": 403, None: 403}),
    ("/approvals/reviews/{bypass}/", {"note": "ok"},
     {"approver": 302, "admin": 302, "operator": 403, "oncall": 403, None: 403}),
    ("/approvals/policies/prod/delete/", {},
     {"admin": 302, "approver": 403, "operator": 403, "oncall": 403, None: 403}),
    ("/approvals/freezes/{freeze}/delete/", {},
     {"admin": 302, "approver": 403, "operator": 403, "oncall": 403, None: 403}),
    ("/approvals/maintenance/{maintenance}/delete/", {},
     {"admin": 302, "approver": 403, "operator": 403, "oncall": 403, None: 403}),
]


@pytest.mark.parametrize("role", ROLES)
def test_every_action_checks_the_role(client, make_user, setup, role):
    user = make_user(role)
    client.force_login(user)
    for template, data, expected in POSTS:
        path = _path(template, setup)
        status = client.post(path, data).status_code
        assert status == expected[role], (role, path, status)
    # What went through did what the role allows and nothing else.
    req = ApprovalRequest.objects.get(pk=setup["req"].pk)
    assert (req.status == ApprovalRequest.Status.APPROVED) == (role in APPROVERS)
    assert ApprovalPolicy.objects.exists() == (role != "admin")


def test_operators_see_their_own_requests_only(client, make_user, setup):
    client.force_login(setup["author"])
    assert client.get(f"/approvals/requests/{setup['req'].pk}/").status_code == 200
    html = client.get("/approvals/requests/").content.decode()
    assert "thing 1" in html
    client.force_login(make_user("operator"))
    assert "thing 1" not in client.get("/approvals/requests/").content.decode()


API = [
    ("get", "/api/v1/approvals/requests/", None, {"operator": 200, "approver": 200,
                                                  "admin": 200, "oncall": 403, None: 403}),
    ("get", "/api/v1/approvals/requests/{req}/", None,
     {"operator": 403, "approver": 200, "admin": 200, "oncall": 403, None: 403}),
    ("post", "/api/v1/approvals/requests/{req}/decisions/", {"kind": "comment",
                                                             "comment": "looks fine"},
     {"operator": 403, "approver": 201, "admin": 201, "oncall": 403, None: 403}),
    ("post", "/api/v1/approvals/requests/{req}/withdraw/", {"reason": "x"},
     {"operator": 403, "approver": 403, "admin": 200, "oncall": 403, None: 403}),
    ("post", "/api/v1/approvals/requests/{req}/emergency/", {"reason": "x"},
     {"operator": 403, "approver": 403, "admin": 403, "oncall": 403, None: 403}),
    ("get", "/api/v1/approvals/reviews/", None,
     {"operator": 403, "approver": 200, "admin": 200, "oncall": 403, None: 403}),
    ("get", "/api/v1/approvals/policies/", None,
     {"operator": 200, "approver": 200, "admin": 200, "oncall": 200, None: 403}),
    ("post", "/api/v1/approvals/policies/", {"name": "new", "requirements": [
        {"group": "approver", "count": 1}]},
     {"operator": 403, "approver": 403, "admin": 201, "oncall": 403, None: 403}),
    ("patch", "/api/v1/approvals/policies/prod/", {"validity_hours": 4},
     {"operator": 403, "approver": 403, "admin": 200, "oncall": 403, None: 403}),
    ("get", "/api/v1/approvals/policies/export/", None,
     {"operator": 200, "approver": 200, "admin": 200, "oncall": 200, None: 403}),
    ("post", "/api/v1/approvals/policies/import/", {"document": "version: 1\npolicies: []\n"},
     {"operator": 403, "approver": 403, "admin": 200, "oncall": 403, None: 403}),
    ("get", "/api/v1/approvals/freeze-windows/", None,
     {"operator": 200, "approver": 200, "admin": 200, "oncall": 200, None: 403}),
    ("post", "/api/v1/approvals/freeze-windows/", {
        "name": "xmas", "kind": "dated", "timezone": "Asia/Shanghai", "start_date": "2026-12-24",
        "start_time": "00:00", "end_date": "2026-12-27", "end_time": "00:00"},
     {"operator": 403, "approver": 403, "admin": 201, "oncall": 403, None: 403}),
    ("get", "/api/v1/approvals/maintenance-windows/{maintenance}/", None,
     {"operator": 200, "approver": 200, "admin": 200, "oncall": 200, None: 403}),
    ("delete", "/api/v1/approvals/maintenance-windows/{maintenance}/", None,
     {"operator": 403, "approver": 403, "admin": 204, "oncall": 403, None: 403}),
    ("get", "/api/v1/approvals/calendar/", None,
     {"operator": 200, "approver": 200, "admin": 200, "oncall": 200, None: 403}),
    ("delete", "/api/v1/approvals/policies/prod/", None,
     {"operator": 403, "approver": 403, "admin": 204, "oncall": 403, None: 403}),
]


@pytest.mark.parametrize("role", ROLES)
def test_every_endpoint_checks_the_role(client, make_user, setup, role):
    client.force_login(make_user(role))
    for method, template, body, expected in API:
        path = _path(template, setup)
        kwargs = {"content_type": "application/json"} if body is not None else {}
        response = getattr(client, method)(path, body, **kwargs) if body is not None \
            else getattr(client, method)(path)
        assert response.status_code == expected[role], (role, method, path, response.content)


def test_the_api_needs_authentication(client, setup):
    response = client.get("/api/v1/approvals/requests/")
    assert response.status_code in (401, 403) and response["Content-Type"].startswith(
        "application/json")


def test_api_round_trip_decide_with_reasons_and_read_back(client, make_user, setup):
    approver = make_user("approver")
    client.force_login(approver)
    url = f"/api/v1/approvals/requests/{setup['req'].pk}/"
    bad = client.post(url + "decisions/", {"kind": "reject"}, content_type="application/json")
    assert bad.status_code == 400 and "comment" in bad.json()
    done = client.post(url + "decisions/", {"kind": "approve"}, content_type="application/json")
    assert done.status_code == 201
    body = done.json()
    assert body["status"] == "approved" and body["progress"][0]["met"] is True
    assert [d["kind"] for d in body["decisions"]] == ["approve"]
    again = client.post(url + "decisions/", {"kind": "approve"},
                        content_type="application/json")
    assert again.status_code == 409
    inbox = client.get("/api/v1/approvals/requests/", {"inbox": "1"}).json()
    assert inbox["results"] == []


def test_api_import_errors_name_the_field(client, make_user, setup):
    client.force_login(make_user("admin"))
    response = client.post("/api/v1/approvals/policies/import/", {
        "document": "version: 1\npolicies:\n  - name: x\n    require:\n"
                    "      - {group: approver, count: 0}\n"}, content_type="application/json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["policies[0].require[0].count"]
    bad_window = client.post("/api/v1/approvals/freeze-windows/", {
        "name": "tz", "kind": "weekly", "timezone": "Nowhere/Land", "start_weekday": 4,
        "start_time": "18:00", "end_weekday": 0, "end_time": "08:00"},
        content_type="application/json")
    assert bad_window.status_code == 400 and "timezone" in bad_window.json()


# --- the htmx decision, the inbox and the change page -------------------------------------------


def test_deciding_through_htmx_swaps_only_the_panel(client, make_user, setup):
    approver = make_user("approver")
    client.force_login(approver)
    pk = setup["req"].pk
    response = client.post(f"/approvals/requests/{pk}/decide/", {"kind": "reject",
                                                                "full": "0"},
                           HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert f'id="approval-{pk}"' in html and "Say why" in html  # the error, in place
    response = client.post(f"/approvals/requests/{pk}/decide/", {"kind": "approve",
                                                                "full": "1"},
                           HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html and "approval complete" in html
    assert response["Vary"].count("HX-Request") == 1
    # Without JavaScript the same form posts and redirects back.
    other = services.open_request(subject(setup["author"], host("web-9"), id="9"),
                                  by=setup["author"])
    response = client.post(f"/approvals/requests/{other.pk}/decide/", {
        "kind": "approve", "next": "/changes/"})
    assert response.status_code == 302 and response["Location"] == "/changes/"
    response = client.post(f"/approvals/requests/{other.pk}/decide/", {
        "kind": "comment", "comment": "x", "next": "https://evil.example/"})
    assert response["Location"] == f"/approvals/requests/{other.pk}/"


def test_the_inbox_lists_what_you_may_decide_oldest_first_in_constant_queries(
        client, make_user, setup, django_assert_num_queries):
    author = setup["author"]
    for i in range(3, 6):
        services.open_request(subject(author, host(f"web-{i}"), id=str(i),
                                      summary={"hosts": 1, "steps": [
                                          {"name": "s", "kind": "shell", "command": "uptime"}],
                                          "params": {"token": "********"},
                                          "by_environment": {"prod": 1}}), by=author)
    approver = make_user("approver")
    client.force_login(approver)
    client.get("/approvals/")  # warm the session
    with django_assert_num_queries(8):
        html = client.get("/approvals/").content.decode()
    titles = [t for t in ("thing 1", "thing 3", "thing 4", "thing 5") if t in html]
    assert titles == ["thing 1", "thing 3", "thing 4", "thing 5"]
    assert html.index("thing 1") < html.index("thing 3") < html.index("thing 5")
    assert "token = ********" in html and "prod: 1" in html
    assert html.count('value="approve"') == 4 and html.count('value="reject"') == 4
    assert "thing 2" not in html  # approved by the emergency bypass
    services.open_request(subject(author, host("web-7"), id="7"), by=author)
    with django_assert_num_queries(8):
        client.get("/approvals/")
    # The author sees it among their own requests, never in an inbox.
    client.force_login(author)
    html = client.get("/approvals/").content.decode()
    assert "Nothing waits for your approval." in html and "thing 1" in html


@pytest.fixture
def change(operator):
    prod = Environment.objects.create(name="prod", protected=True)
    Host.objects.create(name="web-1", environment=prod, labels={"role": "web"})
    definition = ("parameters:\n  - name: n\n    type: int\n"
                  "steps:\n  - kind: shell\n    command: echo {{ n }}\n")
    runbook = changes.save_runbook(Runbook(), name="restart", description="", by=operator,
                                   definition=definition)
    change = changes.compose_change(title="Bump", runbook=runbook, selector="role=web",
                                    params={"n": 1}, by=operator)
    changes.submit_change(change, by=operator)
    return change


def test_the_change_page_shows_the_approval_timeline_and_buttons(client, operator, approver,
                                                                 change):
    approve(change, by=approver)
    change = changes.compose_change(title="Bump", runbook=change.runbook_version.runbook,
                                    selector="role=web", params={"n": 2}, by=operator,
                                    change=change)
    client.force_login(approver)
    html = client.get(f"/changes/{change.pk}/").content.decode()
    assert f'id="approval-{request_of(change).pk}"' in html
    assert "an earlier version" in html and "asked again" in html
    assert 'value="approve"' in html
    client.post(f"/approvals/requests/{request_of(change).pk}/decide/", {
        "kind": "approve"}, HTTP_HX_REQUEST="true")
    client.force_login(operator)
    html = client.get(f"/changes/{change.pk}/").content.decode()
    assert "Approved: ready to start." in html and 'value="approve"' not in html
    assert Change.objects.get(pk=change.pk).status == Change.Status.PENDING_APPROVAL


def test_request_page_offers_withdraw_to_the_author_and_bypass_to_emergency_approvers(
        client, operator, make_user, change):
    pk = request_of(change).pk
    client.force_login(operator)
    html = client.get(f"/approvals/requests/{pk}/").content.decode()
    assert "Withdraw the request" in html and "Bypass in an emergency" not in html
    firefighter = make_user("approver")
    firefighter.groups.add(Group.objects.get(name="emergency_approver"))
    client.force_login(firefighter)
    html = client.get(f"/approvals/requests/{pk}/").content.decode()
    assert "Bypass in an emergency" in html and "Withdraw the request" not in html
    response = client.post(f"/approvals/requests/{pk}/emergency/", {"reason": ""})
    assert response.status_code == 302
    assert request_of(change).status == ApprovalRequest.Status.PENDING
    client.post(f"/approvals/requests/{pk}/emergency/", {"reason": "INC-7"})
    assert request_of(change).status == ApprovalRequest.Status.APPROVED
    assert Decision.objects.filter(kind="emergency", reviewed_at__isnull=True).count() == 1


def test_policy_and_window_forms_show_errors_by_field(client, make_user):
    client.force_login(make_user("admin"))
    html = client.post("/approvals/policies/new/", {
        "name": "p", "requirements": "two approvers", "validity_hours": "72"}).content.decode()
    assert "write a count and a group" in html
    html = client.post("/approvals/policies/new/", {
        "name": "p", "requirements": "1 of nobody", "validity_hours": "72"}).content.decode()
    assert "No group named nobody." in html
    response = client.post("/approvals/policies/new/", {
        "name": "p", "requirements": "2 of approver", "selector": "role=db",
        "environments": "prod, staging", "validity_hours": "24", "enabled": "on"})
    assert response.status_code == 302
    policy = ApprovalPolicy.objects.get(name="p")
    assert policy.environments == ["prod", "staging"] and policy.requirements == [
        {"group": "approver", "count": 2}]
    html = client.post("/approvals/freezes/new/", {
        "name": "w", "kind": "weekly", "timezone": "Moon/Base", "start_weekday": "4",
        "start_time": "18:00", "end_weekday": "0", "end_time": "08:00"}).content.decode()
    assert "Not a time zone name" in html
    response = client.post("/approvals/freezes/new/", {
        "name": "w", "kind": "weekly", "timezone": "Asia/Shanghai", "start_weekday": "4",
        "start_time": "18:00", "end_weekday": "0", "end_time": "08:00", "enabled": "on",
        "environments": "prod"})
    assert response.status_code == 302
    assert FreezeWindow.objects.get(name="w").describe() == "Fri 18:00 – Mon 08:00 Asia/Shanghai"
    html = client.post("/approvals/policies/import/", {
        "document": "version: 1\npolicies:\n  - name: bad name\n    require: []\n"}
    ).content.decode()
    assert "policies[0].name" in html and "policies[0].require" in html
