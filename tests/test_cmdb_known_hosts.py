"""Pinning host keys from a known_hosts file, checked against the lab's real keys."""

from pathlib import Path

import pytest

from cmdb import services
from cmdb.models import Environment, Host, HostKey
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab_hosts(ssh_lab):
    env = Environment.objects.create(name="dev")
    return [Host.objects.create(name=h["name"], address=h["address"], port=h["port"],
                                ssh_user=h["user"], environment=env)
            for h in ssh_lab["hosts"][:3]]


def test_lab_known_hosts_pins_matching_hosts(ssh_lab, lab_hosts, operator, client):
    text = Path(ssh_lab["known_hosts"]).read_text()
    report = services.import_known_hosts(text, by=operator)
    assert sorted(report["pinned"]) == [h.name for h in lab_hosts]
    for host, entry in zip(lab_hosts, ssh_lab["hosts"], strict=False):
        pinned = HostKey.objects.get(host=host)
        assert pinned.key == entry["host_key"]
        assert pinned.trusted_by == operator and pinned.source == "known_hosts"
    assert AuditEvent.objects.filter(action="host.trust_key").count() == 3
    # Importing again changes nothing.
    again = services.import_known_hosts(text, by=operator)
    assert again["pinned"] == [] and sorted(again["unchanged"]) == [h.name for h in lab_hosts]


def test_different_pinned_key_is_a_conflict_not_a_change(ssh_lab, lab_hosts, operator):
    other = ssh_lab["hosts"][5]["host_key"]
    services.trust_host_key(lab_hosts[0], other, by=operator)
    report = services.import_known_hosts(Path(ssh_lab["known_hosts"]).read_text(),
                                         by=operator)
    assert report["conflicts"] == [lab_hosts[0].name]
    assert [k.key for k in lab_hosts[0].host_keys.all()] == [other]


def test_bad_lines_are_reported_with_their_numbers(lab_hosts, operator):
    text = "# comment\n\nnot-a-valid line\n@cert-authority *.example ssh-ed25519 AAAA\n"
    report = services.import_known_hosts(text, by=operator)
    assert [e["line"] for e in report["errors"]] == [3, 4]


def test_known_hosts_page(client, operator, ssh_lab, lab_hosts):
    client.force_login(operator)
    html = client.post("/inventory/known-hosts/", {
        "content": Path(ssh_lab["known_hosts"]).read_text()}).content.decode()
    assert "Pinned keys of 3 hosts." in html
    assert client.post("/inventory/known-hosts/", {"content": ""}).status_code == 200


def test_oncall_cannot_import_known_hosts(client, oncall):
    client.force_login(oncall)
    assert client.post("/inventory/known-hosts/", {"content": "x"}).status_code == 403
