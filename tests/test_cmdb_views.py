"""Inventory pages: list with filters and htmx partials, detail, forms, roles."""

import pytest

from cmdb import services
from cmdb.models import Environment, Group, Host, HostKey
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def inventory(operator):
    prod = Environment.objects.create(name="prod", protected=True)
    dev = Environment.objects.create(name="dev")
    web = Group.objects.create(name="web")
    hosts = []
    for i in range(1, 61):
        host = Host.objects.create(name=f"web-{i:02d}", address=f"127.0.10.{i}",
                                   environment=prod if i % 2 else dev,
                                   labels={"role": "web", "zone": "a" if i < 30 else "b"})
        host.groups.add(web)
        hosts.append(host)
    Host.objects.create(name="db-01", environment=prod, labels={"role": "db"})
    return hosts


def test_host_list_pages_and_counts(client, operator, inventory, django_assert_max_num_queries):
    client.force_login(operator)
    with django_assert_max_num_queries(8):
        html = client.get("/inventory/").content.decode()
    assert "61 hosts" in html
    assert "Page 1 of 2" in html
    assert html.count('<td><a href="/inventory/hosts/') == 50


def test_selector_filter_in_the_url_and_htmx_partial(client, operator, inventory):
    client.force_login(operator)
    response = client.get("/inventory/", {"selector": "env=prod,zone=b"},
                          HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html and 'id="results"' in html  # only the region
    assert "HX-Request" in response["Vary"]
    names = {n for n in (f"web-{i:02d}" for i in range(30, 61, 1)) if int(n[-2:]) % 2}
    for name in names:
        assert f">{name}<" in html
    assert ">web-02<" not in html and ">db-01<" not in html


def test_bad_selector_shows_where_and_what(client, operator, inventory):
    client.force_login(operator)
    html = client.get("/inventory/", {"selector": "zone in (a,b"}).content.decode()
    assert "position 12" in html and "expected" in html
    assert "0 hosts" in html


def test_selector_preview_counts_live(client, operator, inventory):
    client.force_login(operator)
    html = client.get("/inventory/preview/", {"selector": "role=db"}).content.decode()
    assert "1 host matches" in html and "db-01" in html
    html = client.get("/inventory/preview/", {"selector": "role="}).content.decode()
    assert "position 5" in html


def test_host_form_keeps_input_and_shows_errors_next_to_fields(client, operator, inventory):
    client.force_login(operator)
    env = Environment.objects.get(name="dev")
    response = client.post("/inventory/hosts/new/", {
        "name": "bad name", "address": "10.0.0.1", "port": "70000", "ssh_user": "root",
        "environment": env.pk, "labels": "role=web\nenv=prod", "variables": "{}",
    })
    html = response.content.decode()
    assert response.status_code == 200
    assert 'value="10.0.0.1"' in html  # nothing typed is lost
    assert "Ensure this value is less than or equal to 65535." in html
    assert not Host.objects.filter(address="10.0.0.1").exists()


def test_host_create_edit_and_history(client, operator, inventory):
    client.force_login(operator)
    env = Environment.objects.get(name="dev")
    response = client.post("/inventory/hosts/new/", {
        "name": "api-01", "address": "10.0.0.9", "port": "22", "ssh_user": "deploy",
        "environment": env.pk, "labels": "role=api", "variables": '{"http_port": 8080}',
        "enabled": "on",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    host = Host.objects.get(name="api-01")
    assert host.labels == {"role": "api"} and host.variables == {"http_port": 8080}
    client.post("/inventory/hosts/api-01/edit/", {
        "name": "api-01", "address": "10.0.0.10", "port": "22", "ssh_user": "deploy",
        "environment": env.pk, "labels": "role=api\ntier=1", "variables": "{}",
        "enabled": "on",
    })
    event = AuditEvent.objects.filter(action="host.update", object_id=str(host.pk)).get()
    assert event.detail["changes"]["address"] == ["10.0.0.9", "10.0.0.10"]
    html = client.get("/inventory/hosts/api-01/").content.decode()
    assert "host.update" in html and "10.0.0.9" in html


@pytest.mark.parametrize(("role", "status"), [("oncall", 403), ("approver", 403)])
def test_readers_cannot_edit(client, make_user, inventory, role, status):
    client.force_login(make_user(role))
    assert client.get("/inventory/").status_code == 200
    assert client.get("/inventory/hosts/new/").status_code == status
    assert client.post("/inventory/hosts/web-01/delete/").status_code == status
    assert Host.objects.filter(name="web-01").exists()


def test_only_admins_see_credentials(client, operator, admin_user):
    client.force_login(operator)
    assert client.get("/inventory/credentials/").status_code == 403
    client.force_login(admin_user)
    assert client.get("/inventory/credentials/").status_code == 200


def test_host_key_changed_is_red_and_only_admin_retrusts(client, operator, admin_user,
                                                         inventory):
    host = inventory[0]
    HostKey.objects.create(host=host, key=KEY, fingerprint="SHA256:old", source="manual")
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZXJrZXlub3RoaW5ndG9zZWVoZXJlYXRhbGwxMjM0"
    Host.objects.filter(pk=host.pk).update(host_key_state="trusted")
    services.record_host_key_mismatch(host, other)
    client.force_login(operator)
    html = client.get(f"/inventory/hosts/{host.name}/").content.decode()
    assert "Host key changed." in html and "status failed" in html
    assert "Re-trust the new key" not in html
    assert client.post(f"/inventory/hosts/{host.name}/retrust-key/").status_code == 403
    client.force_login(admin_user)
    client.post(f"/inventory/hosts/{host.name}/retrust-key/")
    host.refresh_from_db()
    assert host.host_key_state == "trusted"
    assert [k.key for k in host.host_keys.all()] == [other]


def test_bulk_label_edit_on_a_selection(client, operator, inventory):
    client.force_login(operator)
    picked = inventory[:3]
    client.post("/inventory/hosts/bulk-labels/", {
        "hosts": [h.pk for h in picked], "set_labels": "canary=yes", "remove_keys": "zone",
    })
    for host in picked:
        host.refresh_from_db()
        assert host.labels == {"role": "web", "canary": "yes"}
    inventory[4].refresh_from_db()
    assert "canary" not in inventory[4].labels
