"""The on-call API: roles on every endpoint (read and write), schedules and layers CRUD,
overrides, ``now/`` and ``shifts/`` (edges, DST, validation), the audit trail."""

from datetime import UTC, date, datetime, time

import pytest
from django.urls import reverse

from oncall import api_urls, services
from oncall.models import Layer, Override, Schedule
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def send(client, method, url, data=None):
    if data is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, data, content_type="application/json")


@pytest.fixture
def world(make_user, admin_user):
    """A Berlin schedule (daily 09:00: alice, bob), one override; ids for the URLs."""
    alice, bob = make_user("oncall", username="alice"), make_user("oncall", username="bob")
    schedule = services.create_schedule(by=admin_user, name="Platform", time_zone="Europe/Berlin")
    layer = services.create_layer(schedule, by=admin_user, name="Primary",
                                  participants=[alice, bob], rotation=Layer.Rotation.DAILY,
                                  handoff_time=time(9), start_date=date(2026, 3, 2))
    override = services.create_override(schedule, user=alice, start=utc(2030, 1, 1),
                                        end=utc(2030, 1, 2), by=admin_user)
    AuditEvent.objects.all().delete()
    return {"pk": schedule.pk, "layer_pk": layer.pk, "override_pk": override.pk}


LAYER = {"name": "Weekends", "rotation": "weekly", "handoff_time": "10:00",
         "start_date": "2026-03-07", "participants": ["bob"], "restrict_days": [5, 6],
         "restrict_start": "00:00", "restrict_end": "00:00"}
READ, OVERRIDES, ADMIN = {"oncall", "operator", "admin"}, {"oncall", "admin"}, {"admin"}
ENDPOINTS = [
    # url name, kwargs used, method, body, who may, success status
    ("api-oncall-schedules", (), "get", None, READ, 200),
    ("api-oncall-schedules", (), "post", {"name": "New", "time_zone": "Asia/Shanghai"},
     ADMIN, 201),
    ("api-oncall-schedule", ("pk",), "get", None, READ, 200),
    ("api-oncall-schedule", ("pk",), "put",
     {"name": "Platform", "time_zone": "America/New_York", "description": "x"}, ADMIN, 200),
    ("api-oncall-schedule", ("pk",), "patch", {"description": "y"}, ADMIN, 200),
    ("api-oncall-schedule", ("pk",), "delete", None, ADMIN, 204),
    ("api-oncall-now", ("pk",), "get", None, READ, 200),
    ("api-oncall-shifts", ("pk",), "get", None, READ, 200),
    ("api-oncall-layers", ("pk",), "get", None, READ, 200),
    ("api-oncall-layers", ("pk",), "post", LAYER, ADMIN, 201),
    ("api-oncall-layer", ("pk", "layer_pk"), "get", None, READ, 200),
    ("api-oncall-layer", ("pk", "layer_pk"), "put",
     {**LAYER, "name": "Primary", "level": 1}, ADMIN, 200),
    ("api-oncall-layer", ("pk", "layer_pk"), "patch", {"handoff_time": "08:00"}, ADMIN, 200),
    ("api-oncall-layer", ("pk", "layer_pk"), "delete", None, ADMIN, 204),
    ("api-oncall-overrides", ("pk",), "get", None, READ, 200),
    ("api-oncall-overrides", ("pk",), "post",
     {"user": "bob", "start": "2030-02-01T00:00:00Z", "end": "2030-02-01T08:00:00Z"},
     OVERRIDES, 201),
    ("api-oncall-override", ("pk", "override_pk"), "get", None, READ, 200),
    ("api-oncall-override", ("pk", "override_pk"), "delete", None, OVERRIDES, 204),
]
ROLES = ["operator", "approver", "oncall", "admin", "outsider", "anonymous"]


def test_the_table_covers_every_endpoint():
    served = set()
    for pattern in api_urls.urlpatterns:
        view = pattern.callback.view_class
        served |= {(pattern.name, m) for m in ("get", "post", "put", "patch", "delete")
                   if hasattr(view, m)}
    assert served == {(name, method) for name, _, method, *_ in ENDPOINTS}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("name", "keys", "method", "body", "allowed", "success"), ENDPOINTS,
                         ids=[f"{e[2]} {e[0]}" for e in ENDPOINTS])
def test_who_may_do_what(client, make_user, world, role, name, keys, method, body, allowed,
                         success):
    if role != "anonymous":
        client.force_login(make_user(None if role == "outsider" else role, password=None))
    url = reverse(name, kwargs={k: world[k] for k in keys})
    before = (Schedule.objects.count(), Layer.objects.count(), Override.objects.count())
    response = send(client, method, url, body)
    if role in allowed:
        assert response.status_code == success, response.content
        assert AuditEvent.objects.exists() == (method != "get")
        return
    denied = 401 if role == "anonymous" else 403
    assert response.status_code == denied, response.content
    assert response["Content-Type"] == "application/json"
    assert not AuditEvent.objects.exists()
    assert (Schedule.objects.count(), Layer.objects.count(), Override.objects.count()) == before
    assert Schedule.objects.get().time_zone == "Europe/Berlin"


# --- behaviour ----------------------------------------------------------------------------------


@pytest.fixture
def reader(client, make_user):
    client.force_login(make_user("operator"))
    return client


def test_now_at_a_handoff(reader, world):
    url = reverse("api-oncall-now", kwargs={"pk": world["pk"]})
    # Tuesday 3 March 09:00 CET = 08:00 UTC: alice hands over to bob.
    before = reader.get(url, {"at": "2026-03-03T07:59:59.999999Z"}).json()
    assert [u["username"] for u in before["on_call"]] == ["alice"]
    at = reader.get(url, {"at": "2026-03-03T09:00:00+01:00"}).json()
    assert [u["username"] for u in at["on_call"]] == ["bob"]
    assert at["shift"]["start"] == "2026-03-03T08:00:00Z"
    assert at["shift"]["end"] == "2026-03-04T08:00:00Z"
    assert at["shift"]["kind"] == "layer" and at["shift"]["user"]["username"] == "bob"
    assert at["next"]["start"] == "2026-03-04T08:00:00Z"
    assert at["next"]["user"]["username"] == "alice"
    nobody = reader.get(url, {"at": "2026-03-01T00:00:00Z"}).json()
    assert nobody["on_call"] == [] and nobody["shift"] is None
    assert nobody["next"]["start"] == "2026-03-02T08:00:00Z"
    bad = reader.get(url, {"at": "2026-03-03T09:00:00"})  # no offset
    assert bad.status_code == 400 and "offset" in bad.json()["at"][0]


def test_shifts_over_the_spring_change(reader, world):
    url = reverse("api-oncall-shifts", kwargs={"pk": world["pk"]})
    found = reader.get(url, {"start": "2026-03-28T00:00:00Z", "end": "2026-03-31T00:00:00Z"}).json()
    assert [(s["start"], s["end"], s["user"]["username"]) for s in found] == [
        ("2026-03-28T00:00:00Z", "2026-03-28T08:00:00Z", "bob"),
        ("2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "alice"),  # 09:00 CET -> 09:00 CEST
        ("2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z", "bob"),
        ("2026-03-30T07:00:00Z", "2026-03-31T00:00:00Z", "alice"),
    ]
    assert all(s["source"] == f"layer:{world['layer_pk']}" for s in found)
    for params, field in [({"start": "2026-03-28T00:00:00Z", "end": "2026-03-27T00:00:00Z"}, "end"),
                          ({"start": "2026-01-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}, "end"),
                          ({"start": "yesterday"}, "start")]:
        response = reader.get(url, params)
        assert response.status_code == 400 and field in response.json(), params


def test_overrides_through_the_api(client, oncall, world):
    client.force_login(oncall)
    url = reverse("api-oncall-overrides", kwargs={"pk": world["pk"]})
    response = send(client, "post", url, {"user": "bob", "start": "2026-03-02T10:00:00Z",
                                          "end": "2026-03-02T12:00:00Z", "note": "dentist"})
    assert response.status_code == 201, response.content
    assert response.json()["created_by"] == oncall.username
    now = reverse("api-oncall-now", kwargs={"pk": world["pk"]})
    at = client.get(now, {"at": "2026-03-02T11:00:00Z"}).json()
    assert at["on_call"][0]["username"] == "bob" and at["shift"]["kind"] == "override"
    # Past overrides are left out unless asked for.
    listed = client.get(url).json()["results"]
    assert [o["user"] for o in listed] == ["alice"]
    everything = client.get(url, {"all": "1"}).json()["results"]
    assert sorted(o["user"] for o in everything) == ["alice", "bob"]
    bad = send(client, "post", url, {"user": "bob", "start": "2026-03-02T12:00:00Z",
                                     "end": "2026-03-02T10:00:00Z"})
    assert bad.status_code == 400
    assert bad.json() == {"detail": "The end of an override must be after its start."}


def test_schedule_and_layer_validation_errors(client, admin_user, world):
    client.force_login(admin_user)
    response = send(client, "post", reverse("api-oncall-schedules"),
                    {"name": "X", "time_zone": "Mars/Base"})
    assert response.status_code == 400
    assert response.json() == {"detail": "Unknown time zone: Mars/Base."}
    layers = reverse("api-oncall-layers", kwargs={"pk": world["pk"]})
    response = send(client, "post", layers, {**LAYER, "participants": []})
    assert response.status_code == 400 and "participants" in response.json()
    response = send(client, "post", layers, {**LAYER, "participants": ["zed"]})
    assert response.status_code == 400 and "zed" in str(response.json()["participants"])
    response = send(client, "post", layers, {**LAYER, "level": 1})
    assert response.status_code == 400
    assert response.json() == {"detail": "This schedule has a layer at level 1 already."}
    response = send(client, "post", layers, {**LAYER, "rotation": "custom", "shift_length": 36,
                                             "shift_unit": "hours"})
    assert response.status_code == 201
    created = response.json()
    assert created["level"] == 2 and created["participants"] == ["bob"]
    detail = client.get(reverse("api-oncall-schedule", kwargs={"pk": world["pk"]})).json()
    assert [layer["name"] for layer in detail["layers"]] == ["Weekends", "Primary"]


def test_layer_edit_replaces_the_rotation(client, admin_user, world):
    client.force_login(admin_user)
    url = reverse("api-oncall-layer", kwargs={"pk": world["pk"], "layer_pk": world["layer_pk"]})
    response = send(client, "patch", url, {"participants": ["bob", "alice"]})
    assert response.status_code == 200 and response.json()["participants"] == ["bob", "alice"]
    schedule = Schedule.objects.get()
    assert [u.username for u in services.on_call(schedule, utc(2026, 3, 2, 8))] == ["bob"]
    event = AuditEvent.objects.get(action="oncall_layer.edit")
    assert event.detail["participants"] == ["bob", "alice"]


def test_schema_documents_the_oncall_api(client, admin_user):
    client.force_login(admin_user)
    text = client.get("/api/schema/").content.decode()
    for path in ("/api/v1/oncall/schedules/{id}/now/", "/api/v1/oncall/schedules/{id}/shifts/",
                 "/api/v1/oncall/schedules/{id}/overrides/"):
        assert path in text
