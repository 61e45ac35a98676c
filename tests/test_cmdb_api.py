"""The inventory API: roles on every write, filters, pagination, query counts, audit,
and credentials whose secrets never come back out."""

import asyncssh
import pytest
from django.urls import reverse

from cmdb import api_urls
from cmdb.models import Credential, Environment, Group, Host, HostKey, Service
from opsplane import secrets as vault
from opsplane import ssh
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "hunter2-Very-Secret-password"  # noqa: S105 - test data
PASSPHRASE = "open-sesame-passphrase"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def new_public_key():
    return ssh.public_key_line(asyncssh.generate_private_key("ssh-ed25519"))


def send(client, method, url, data=None):
    if data is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, data, content_type="application/json")


# --- roles on every mutating endpoint -----------------------------------------------------


@pytest.fixture
def world(db):
    """One of everything the endpoints below act on."""
    dev = Environment.objects.create(name="dev")
    Host.objects.create(name="h1", environment=dev)  # no key pinned
    changed = Host.objects.create(name="h2", environment=dev)
    HostKey.objects.create(host=changed, key=KEY, fingerprint=ssh.fingerprint(KEY),
                           source="manual")
    Host.objects.filter(pk=changed.pk).update(host_key_state="changed",
                                              presented_host_key=new_public_key())
    Group.objects.create(name="g1")
    Service.objects.create(name="s1")
    Credential.objects.create(name="c1", kind="password",
                              secret=vault.encrypt({"password": PASSWORD}))


EDIT, ADMIN = {"operator", "admin"}, {"admin"}
ENDPOINTS = [
    # url name, url kwargs, method, a valid request body, who may, success status
    ("api-hosts", {}, "post", {"name": "new", "environment": "dev"}, EDIT, 201),
    ("api-host", {"name": "h1"}, "put",
     {"name": "h1", "environment": "dev", "address": "10.0.0.1"}, EDIT, 200),
    ("api-host", {"name": "h1"}, "patch", {"address": "10.0.0.2"}, EDIT, 200),
    ("api-host", {"name": "h1"}, "delete", None, EDIT, 204),
    ("api-hosts-bulk-labels", {}, "post", {"selector": "name=h1", "set": {"a": "b"}},
     EDIT, 200),
    ("api-host-trust", {"name": "h1"}, "post", {"key": KEY}, EDIT, 201),
    ("api-host-retrust", {"name": "h2"}, "post", None, ADMIN, 200),
    ("api-host-facts", {"name": "h1"}, "post", None, EDIT, 202),
    ("api-facts", {}, "post", {"selector": "name=h1"}, EDIT, 202),
    ("api-inventory-import", {}, "post",
     {"format": "csv", "content": "name,address\nnew,10.0.0.9\n", "environment": "dev",
      "dry_run": False}, EDIT, 200),
    ("api-groups", {}, "post", {"name": "g2", "parents": ["g1"]}, EDIT, 201),
    ("api-group", {"name": "g1"}, "put", {"name": "g1", "description": "x"}, EDIT, 200),
    ("api-group", {"name": "g1"}, "patch", {"description": "y"}, EDIT, 200),
    ("api-group", {"name": "g1"}, "delete", None, EDIT, 204),
    ("api-services", {}, "post", {"name": "s2", "hosts": ["h1"]}, EDIT, 201),
    ("api-service", {"name": "s1"}, "put", {"name": "s1", "tier": "high"}, EDIT, 200),
    ("api-service", {"name": "s1"}, "patch", {"hosts": ["h1", "h2"]}, EDIT, 200),
    ("api-service", {"name": "s1"}, "delete", None, EDIT, 204),
    ("api-environments", {}, "post", {"name": "qa", "protected": True}, ADMIN, 201),
    ("api-credentials", {}, "post", {"name": "c2", "kind": "password", "password": PASSWORD},
     ADMIN, 201),
    ("api-credential", {"name": "c1"}, "put", {"name": "c1", "kind": "password"}, ADMIN, 200),
    ("api-credential", {"name": "c1"}, "patch", {"password": PASSWORD + "2"}, ADMIN, 200),
    ("api-credential", {"name": "c1"}, "delete", None, ADMIN, 204),
]
ROLES = ["operator", "approver", "oncall", "admin", "outsider", "anonymous"]


def test_the_table_covers_every_mutating_endpoint():
    served = set()
    for pattern in api_urls.urlpatterns:
        view = pattern.callback.view_class
        served |= {(pattern.name, m) for m in ("post", "put", "patch", "delete")
                   if hasattr(view, m)}
    assert served == {(name, method) for name, _, method, *_ in ENDPOINTS}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("name", "kwargs", "method", "body", "allowed", "success"), ENDPOINTS,
                         ids=[f"{e[2]} {e[0]}" for e in ENDPOINTS])
def test_who_may_write(client, make_user, world, role, name, kwargs, method, body, allowed,
                       success):
    if role != "anonymous":
        # No password: hashing one per test would be most of this table's time.
        client.force_login(make_user(None if role == "outsider" else role, password=None))
    url = reverse(name, kwargs=kwargs)
    response = send(client, method, url, body)
    if role in allowed:
        assert response.status_code == success, response.content
        assert AuditEvent.objects.exists() or name in {"api-host-facts", "api-facts"}
        return
    denied = 401 if role == "anonymous" else 403
    assert response.status_code == denied, response.content
    assert response["Content-Type"] == "application/json"
    # Refused before the request is even read: a body that does not validate (or, for
    # trust-key, none, which would make the server connect to the host) changes nothing.
    assert send(client, method, url, {}).status_code == denied
    assert not AuditEvent.objects.exists()
    assert Host.objects.filter(name="h1", address="").exists()
    assert Credential.objects.filter(name="c1").exists()


# --- host list ---------------------------------------------------------------------------


def make_hosts(count, *, prefix="web"):
    """Hosts with everything the list serializes: groups, services, keys, a credential."""
    prod, _ = Environment.objects.get_or_create(name="prod")
    dev, _ = Environment.objects.get_or_create(name="dev")
    web, _ = Group.objects.get_or_create(name="web")
    edge, _ = Group.objects.get_or_create(name="edge")
    api, _ = Service.objects.get_or_create(name="api")
    credential, _ = Credential.objects.get_or_create(
        name="deploy", kind="password", defaults={"secret": vault.encrypt({"password": "x"})})
    hosts = Host.objects.bulk_create([
        Host(name=f"{prefix}-{i:02d}", address=f"10.0.0.{i}", credential=credential,
             environment=prod if i % 2 else dev,
             labels={"role": "web", "zone": "a" if i < 30 else "b"})
        for i in range(1, count + 1)
    ])
    Host.groups.through.objects.bulk_create(
        [Host.groups.through(host=h, group=g) for h in hosts for g in (web, edge)])
    api.hosts.add(*hosts)
    HostKey.objects.bulk_create([HostKey(host=h, key=KEY, fingerprint="SHA256:x",
                                         source="manual") for h in hosts])
    return hosts


def test_host_list_is_paginated(client, operator):
    make_hosts(61)
    client.force_login(operator)
    page = client.get("/api/v1/hosts/").json()
    assert page["count"] == 61 and len(page["results"]) == 50
    assert "offset=50" in page["next"] and page["previous"] is None
    assert page["results"][0]["name"] == "web-01"
    last = client.get(page["next"]).json()
    assert [h["name"] for h in last["results"]] == [f"web-{i}" for i in range(51, 62)]
    assert last["next"] is None
    small = client.get("/api/v1/hosts/", {"limit": 5, "offset": 58}).json()
    assert [h["name"] for h in small["results"]] == ["web-59", "web-60", "web-61"]


def test_host_list_shows_relations_by_name(client, operator):
    make_hosts(1)
    client.force_login(operator)
    row = client.get("/api/v1/hosts/").json()["results"][0]
    assert row["environment"] == "prod" and row["credential"] == "deploy"
    assert row["groups"] == ["edge", "web"] and row["services"] == ["api"]
    host = client.get(f"/api/v1/hosts/{row['name']}/").json()  # keys are on the detail
    assert host["host_keys"][0]["key"] == KEY and host["groups"] == ["edge", "web"]


def test_host_list_filters_by_selector_search_and_ordering(client, oncall):
    make_hosts(61)
    Host.objects.filter(name="web-07").update(description="the flaky one")
    client.force_login(oncall)

    def names(**params):
        response = client.get("/api/v1/hosts/", {"limit": 100, **params})
        assert response.status_code == 200, response.content
        return [h["name"] for h in response.json()["results"]]

    assert names(selector="env=prod,zone=b") == [
        f"web-{i}" for i in range(31, 62, 2)]
    assert names(selector="name~web-0?,zone notin (b)", ordering="-name")[:2] == [
        "web-09", "web-08"]
    assert names(search="FLAKY") == ["web-07"]
    assert names(search="10.0.0.6") == ["web-06", "web-60", "web-61"]
    assert names(ordering="-name")[0] == "web-61"
    assert names(ordering="environment")[:2] == ["web-02", "web-04"]  # dev, then by name
    assert names(selector="group=web", search="web-1")[:1] == ["web-10"]


def test_a_bad_selector_is_a_400_with_the_position(client, operator):
    client.force_login(operator)
    response = client.get("/api/v1/hosts/", {"selector": "zone in (a,b"})
    assert response.status_code == 400
    body = response.json()
    assert "position 12" in body["selector"][0] and "expected" in body["selector"][0]
    assert int(body["position"]) == 12
    response = client.get("/api/v1/hosts/", {"ordering": "password"})
    assert response.status_code == 400 and "ordering" in response.json()


@pytest.mark.parametrize("count", [10, 60])
def test_host_list_query_count_does_not_grow_with_rows(client, operator,
                                                       django_assert_num_queries, count):
    make_hosts(count)
    client.force_login(operator)
    # session, user, roles; count, hosts (+environment, credential); groups, services.
    with django_assert_num_queries(7):
        response = client.get("/api/v1/hosts/", {"selector": "role=web"})
    assert len(response.json()["results"]) == min(count, 50)


# --- writes through the API ----------------------------------------------------------------


def test_create_and_update_audit_the_field_diff(client, operator):
    Environment.objects.create(name="dev")
    Group.objects.create(name="web")
    client.force_login(operator)
    response = client.post("/api/v1/hosts/", {
        "name": "api-01", "environment": "dev", "labels": {"role": "api"}, "groups": ["web"],
    }, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["groups"] == ["web"] and response.json()["host_key_state"] == "unknown"
    host = Host.objects.get(name="api-01")
    created = AuditEvent.objects.get(action="host.create")
    assert created.actor == operator and created.object_id == str(host.pk)
    assert created.detail["changes"]["labels"] == [None, {"role": "api"}]
    assert created.source == "127.0.0.1"

    response = client.patch("/api/v1/hosts/api-01/", {
        "address": "10.1.1.1", "groups": [], "labels": {"role": "api", "tier": "1"},
    }, content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["groups"] == [] and response.json()["address"] == "10.1.1.1"
    updated = AuditEvent.objects.get(action="host.update")
    assert updated.detail["changes"] == {
        "address": ["", "10.1.1.1"], "groups": [["web"], []],
        "labels": [{"role": "api"}, {"role": "api", "tier": "1"}],
    }


def test_validation_errors_come_back_per_field(client, operator):
    Environment.objects.create(name="dev")
    client.force_login(operator)
    response = client.post("/api/v1/hosts/", {
        "name": "web", "environment": "dev", "labels": {"env": "prod"}, "port": 0,
    }, content_type="application/json")
    assert response.status_code == 400
    assert {"labels", "port"} <= set(response.json())
    response = client.post("/api/v1/hosts/", {"name": "bad name", "environment": "dev"},
                           content_type="application/json")
    assert response.status_code == 400 and "name" in response.json()
    Host.objects.create(name="taken", environment=Environment.objects.get())
    response = client.post("/api/v1/hosts/", {"name": "taken", "environment": "dev"},
                           content_type="application/json")
    assert response.status_code == 400 and "name" in response.json()
    response = client.post("/api/v1/hosts/", {"name": "x", "environment": "nowhere"},
                           content_type="application/json")
    assert response.status_code == 400 and "environment" in response.json()
    assert list(Host.objects.values_list("name", flat=True)) == ["taken"]


@pytest.mark.parametrize("cycle", ["self", "direct", "deep"])
def test_group_cycles_are_a_400_on_parents(client, operator, cycle):
    client.force_login(operator)
    for name, parents in [("a", []), ("b", ["a"]), ("c", ["b"]), ("d", ["c"])]:
        response = client.post("/api/v1/groups/", {"name": name, "parents": parents},
                               content_type="application/json")
        assert response.status_code == 201, response.content
    assert client.get("/api/v1/groups/a/").json()["children"] == ["b"]
    parent = {"self": "a", "direct": "b", "deep": "d"}[cycle]
    response = client.patch("/api/v1/groups/a/", {"parents": [parent]},
                            content_type="application/json")
    assert response.status_code == 400
    assert list(response.json()) == ["parents"] and "cycle" in response.json()["parents"][0]
    assert not Group.objects.get(name="a").parents.exists()


def test_selector_preview(client, approver):
    make_hosts(3)
    Host.objects.filter(name="web-02").update(labels={"role": "db"})
    client.force_login(approver)
    assert client.get("/api/v1/selector/", {"selector": "role=db"}).json() == {
        "count": 1, "hosts": ["web-02"]}
    assert client.get("/api/v1/selector/").json()["count"] == 3
    response = client.get("/api/v1/selector/", {"selector": "role="})
    assert response.status_code == 400 and "position 5" in response.json()["selector"][0]


def test_bulk_labels(client, operator):
    make_hosts(40)
    client.force_login(operator)
    response = client.post("/api/v1/hosts/bulk-labels/", {
        "selector": "zone=a,env=prod", "set": {"canary": "yes"}, "remove": ["zone"],
    }, content_type="application/json")
    assert response.status_code == 200 and response.json() == {"changed": 15}
    assert Host.objects.get(name="web-01").labels == {"role": "web", "canary": "yes"}
    assert Host.objects.get(name="web-02").labels == {"role": "web", "zone": "a"}
    assert AuditEvent.objects.filter(action="host.update").count() == 15
    for body, field in [
        ({"set": {"canary": "no"}}, "selector"),  # no selector is not "every host"
        ({"selector": "zone in (a", "set": {"x": "y"}}, "selector"),
        ({"selector": "zone=b", "set": ["x"]}, "detail"),
        ({"selector": "zone=b", "set": {"env": "prod"}}, "detail"),
    ]:
        response = client.post("/api/v1/hosts/bulk-labels/", body,
                               content_type="application/json")
        assert response.status_code == 400, body
        assert field in response.json(), response.json()
    assert not Host.objects.filter(labels__canary="no").exists()
    assert AuditEvent.objects.filter(action="host.update").count() == 15


def test_retrust_through_the_api(client, admin_user, world):
    client.force_login(admin_user)
    presented = Host.objects.get(name="h2").presented_host_key
    response = client.post("/api/v1/hosts/h2/retrust-key/")
    assert response.status_code == 200
    assert response.json()["host_key_state"] == "trusted"
    assert [k["key"] for k in response.json()["host_keys"]] == [presented]
    assert client.post("/api/v1/hosts/h2/retrust-key/").status_code == 409


# --- credentials ---------------------------------------------------------------------------


SECRET_FIELDS = {"private_key", "passphrase", "password", "secret"}


def assert_no_secret(response, *secrets):
    text = response.content.decode()
    for secret in secrets:
        assert secret not in text
    body = response.json()
    for item in body.get("results", [body]) if isinstance(body, dict) else body:
        assert not SECRET_FIELDS & set(item), item


def test_credentials_never_come_back_out(client, admin_user):
    client.force_login(admin_user)
    key = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    key_text = key.export_private_key("pkcs8-pem", PASSPHRASE).decode()
    key_line = key_text.splitlines()[3]
    secrets = (PASSWORD, PASSPHRASE, key_line)

    response = client.post("/api/v1/credentials/", {
        "name": "deploy", "kind": "ssh_key", "private_key": key_text, "passphrase": PASSPHRASE,
    }, content_type="application/json")
    assert response.status_code == 201, response.content
    assert_no_secret(response, *secrets)
    assert response.json()["fingerprint"] == key.get_fingerprint("sha256")
    assert response.json()["public_key"] == ssh.public_key_line(key)

    response = client.post("/api/v1/credentials/", {
        "name": "db", "kind": "password", "password": PASSWORD}, content_type="application/json")
    assert response.status_code == 201
    assert_no_secret(response, *secrets)

    for url in ("/api/v1/credentials/", "/api/v1/credentials/deploy/",
                "/api/v1/credentials/db/"):
        assert_no_secret(client.get(url), *secrets)
        html = client.get(url, HTTP_ACCEPT="text/html").content.decode()  # browsable API
        assert all(secret not in html for secret in secrets)

    other = asyncssh.generate_private_key("ssh-ed25519")
    response = client.patch("/api/v1/credentials/deploy/", {
        "private_key": other.export_private_key().decode(), "description": "rotated",
    }, content_type="application/json")
    assert response.status_code == 200, response.content
    assert_no_secret(response, *secrets)
    assert response.json()["fingerprint"] == other.get_fingerprint("sha256")
    response = client.put("/api/v1/credentials/db/", {
        "name": "db", "kind": "password", "password": PASSWORD + "2"},
        content_type="application/json")
    assert response.status_code == 200
    assert_no_secret(response, *secrets, PASSWORD + "2")
    assert vault.decrypt(Credential.objects.get(name="db").secret) == {
        "password": PASSWORD + "2"}


def test_credential_errors_name_the_field_without_echoing_it(client, admin_user):
    client.force_login(admin_user)
    key_text = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_private_key(
        "pkcs8-pem", PASSPHRASE).decode()
    response = client.post("/api/v1/credentials/", {
        "name": "deploy", "kind": "ssh_key", "private_key": key_text, "passphrase": "nope",
    }, content_type="application/json")
    assert response.status_code == 400 and list(response.json()) == ["passphrase"]
    response = client.post("/api/v1/credentials/", {
        "name": "deploy", "kind": "ssh_key", "private_key": PASSWORD,
    }, content_type="application/json")
    assert response.status_code == 400 and list(response.json()) == ["private_key"]
    assert PASSWORD not in response.content.decode()
    assert not Credential.objects.exists()


def test_deleting_a_credential_in_use_is_a_409_with_the_count(client, admin_user):
    make_hosts(3)
    client.force_login(admin_user)
    response = client.delete("/api/v1/credentials/deploy/")
    assert response.status_code == 409
    assert "3 hosts use this credential" in response.json()["detail"]
    assert Credential.objects.filter(name="deploy").exists()


def test_services_api_audits_hosts(client, operator):
    make_hosts(2)
    client.force_login(operator)
    response = client.patch("/api/v1/services/api/", {"hosts": ["web-01"]},
                            content_type="application/json")
    assert response.status_code == 200 and response.json()["hosts"] == ["web-01"]
    event = AuditEvent.objects.get(action="service.update")
    assert event.detail["changes"] == {"hosts": [["web-01", "web-02"], ["web-01"]]}


def test_facts_are_queued_for_enabled_hosts_only(client, operator, world,
                                                 django_capture_on_commit_callbacks):
    Host.objects.filter(name="h2").update(enabled=False)
    client.force_login(operator)
    with django_capture_on_commit_callbacks() as queued:
        assert client.post("/api/v1/hosts/h1/facts/").json() == {"queued": ["h1"]}
        assert client.post("/api/v1/hosts/h2/facts/").json() == {"queued": []}
        assert client.post("/api/v1/facts/", {"selector": "name~h*"},
                           content_type="application/json").json() == {"queued": 1}
    assert len(queued) == 2  # one task per request that found an enabled host
