"""The demo data `make run` loads: users per role, environments, the lab's hosts."""

import json

import pytest

from changes.models import Runbook
from cmdb import selectors, services
from cmdb.models import Environment, Host
from opsplane import demo

pytestmark = pytest.mark.django_db


def test_demo_is_idempotent_and_keeps_passwords(tmp_path):
    logins = demo.load(tmp_path / "logins.json")
    assert [e["username"] for e in logins] == ["operator", "approver", "oncall", "admin"]
    again = demo.load(tmp_path / "logins.json")
    assert again == logins
    assert (tmp_path / "logins.json").stat().st_mode & 0o777 == 0o600
    assert set(Environment.objects.values_list("name", "protected")) == {
        ("dev", False), ("staging", False), ("prod", True)}
    assert set(Runbook.objects.values_list("name", flat=True)) == {
        "uptime", "restart-service", "deploy-config"}


def test_lab_hosts_become_inventory_that_answers_over_ssh(tmp_path, ssh_lab):
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(ssh_lab))
    demo.load(tmp_path / "logins.json", lab_inventory=inventory)
    demo.load(tmp_path / "logins.json", lab_inventory=inventory)  # twice: nothing doubles
    assert Host.objects.count() == len(ssh_lab["hosts"])
    assert selectors.resolve("role=web,zone=a").count() == 3
    hosts = selectors.resolve("role=db")
    outcomes = services.gather_facts(hosts, by=None)
    assert {o.reason for o in outcomes.values()} == {""}, outcomes
    assert all(h.facts["kernel"] for h in hosts)
