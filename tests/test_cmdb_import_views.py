"""The import page (preview, then apply) and the export downloads."""

import json
from pathlib import Path

import pytest

from cmdb.models import Environment, Group, Host

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data" / "inventories"

INI = """[web]
web[01:03].example.com ansible_user=deploy

[db]
db01.example.com ansible_port=2222

[prod:children]
web
db

[prod:vars]
ntp=ntp.example.com
"""


@pytest.fixture
def env():
    return Environment.objects.create(name="prod", protected=True)


def test_preview_then_apply(client, operator, env):
    client.force_login(operator)
    html = client.post("/inventory/import/", {"content": INI, "format": "ini",
                                              "environment": "prod"}).content.decode()
    assert "Hosts: 4 to create, 0 to update, 0 unchanged." in html
    assert not Host.objects.exists()  # a preview writes nothing
    token = html.split('name="token" value="', 1)[1].split('"', 1)[0]
    response = client.post("/inventory/import/", {"token": token, "apply": "1"})
    assert response.status_code == 302
    assert Host.objects.count() == 4
    assert Host.objects.get(name="db01.example.com").port == 2222
    assert set(Group.objects.get(name="prod").children.values_list("name", flat=True)) == {
        "web", "db"}
    # The same file again: nothing to change, no apply button.
    html = client.post("/inventory/import/", {"content": INI, "format": "ini",
                                              "environment": "prod"}).content.decode()
    assert "Nothing to change" in html and 'name="token"' not in html


def test_errors_are_listed_by_line_and_nothing_is_offered(client, operator, env):
    client.force_login(operator)
    html = client.post("/inventory/import/", {
        "content": "[web]\nweb[03:01]\nbad host name here\n", "format": "ini",
        "environment": "prod"}).content.decode()
    assert "Line 2:" in html and 'name="token"' not in html
    assert not Host.objects.exists()


def test_a_token_belongs_to_its_user(client, operator, make_user, env):
    client.force_login(operator)
    html = client.post("/inventory/import/", {"content": INI, "format": "ini",
                                              "environment": "prod"}).content.decode()
    token = html.split('name="token" value="', 1)[1].split('"', 1)[0]
    client.force_login(make_user("operator"))
    client.post("/inventory/import/", {"token": token, "apply": "1"})
    assert not Host.objects.exists()


def test_uploaded_file_format_from_its_name(client, operator, env):
    client.force_login(operator)
    path = DATA / "prod.yml"
    with path.open("rb") as fh:
        html = client.post("/inventory/import/", {"file": fh, "environment": "prod"}) \
            .content.decode()
    assert "to create" in html


def test_oncall_cannot_import(client, oncall, env):
    client.force_login(oncall)
    assert client.post("/inventory/import/", {"content": INI, "format": "ini",
                                              "environment": "prod"}).status_code == 403


def test_exports_follow_the_selector(client, oncall, env):
    web = Host.objects.create(name="web-1", address="10.0.0.1", environment=env,
                              labels={"role": "web"})
    Host.objects.create(name="db-1", environment=env, labels={"role": "db"})
    client.force_login(oncall)
    response = client.get("/inventory/export/", {"format": "file_sd", "selector": "role=web"})
    assert response["Content-Disposition"] == 'attachment; filename="targets.json"'
    targets = json.loads(response.content)
    assert [t["labels"]["host"] for t in targets] == [web.name]
    assert "web-1" in client.get("/inventory/export/", {"format": "ansible"}).content.decode()
    csv = client.get("/inventory/export/", {"format": "csv", "selector": "role=db"})
    assert b"db-1" in csv.content and b"web-1" not in csv.content
    assert client.get("/inventory/export/", {"format": "xml"}).status_code == 400
    assert client.get("/inventory/export/", {"selector": "role in ("}).status_code == 400


def test_import_and_export_through_the_api(client, operator, env):
    from opsplane import tokens

    _, token = tokens.create_token(operator, "ci", by=operator)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    body = {"format": "ini", "content": INI, "environment": "prod"}
    plan = client.post("/api/v1/inventory/import/", body, content_type="application/json",
                       **auth).json()
    assert plan["counts"]["hosts"]["create"] == 4 and not Host.objects.exists()
    done = client.post("/api/v1/inventory/import/", {**body, "dry_run": False},
                       content_type="application/json", **auth).json()
    assert done["applied"]["hosts"]["create"] == 4 and Host.objects.count() == 4
    bad = client.post("/api/v1/inventory/import/", {**body, "content": "[web]\nw[9:1]\n"},
                      content_type="application/json", **auth)
    assert bad.status_code == 400 and bad.json()["errors"][0]["line"] == 2
    export = client.get("/api/v1/inventory/export/", {"format": "csv", "selector": "group=db"},
                        **auth)
    assert export.status_code == 200 and b"db01.example.com" in export.content
    assert b"web01" not in export.content
