"""The demo data `make run` loads: users per role, environments, the lab's hosts."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

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


def test_demo_alerts_fill_the_pages_and_the_intake_answers(tmp_path, client, settings):
    from alerts import services as alert_services
    from alerts.models import Alert, Incident, Integration, RoutingConfig
    from alerts.routing_state import current_tree
    from alerts.testing import am_alert, am_payload, post
    from opsplane.management.commands.up import Command
    from opsplane.notify.models import Channel

    demo.load(tmp_path / "logins.json")
    demo.load(tmp_path / "logins.json")  # twice: nothing doubles, the token is kept
    saved = json.loads((tmp_path / "demo_alerts.json").read_text())
    assert (tmp_path / "demo_alerts.json").stat().st_mode & 0o777 == 0o600
    integration = Integration.objects.get()
    assert alert_services.integration_for_token(saved["token"]) == integration
    assert saved["path"] == f"/api/v1/alerts/intake/{saved['token']}/"
    # Channels that send nowhere, a tree with routes by severity and team.
    assert set(Channel.objects.values_list("name", "enabled")) == {
        ("chat", False), ("oncall-mail", False)}
    assert RoutingConfig.objects.count() == 1
    [critical, shop] = current_tree().match({"severity": "critical", "team": "shop"})
    assert (critical.receiver, shop.receiver) == ("critical", "shop")
    # Alerts and incidents on the pages.
    assert Alert.objects.count() == 4
    assert Alert.objects.filter(status="resolved").count() == 1
    # HighCPU is critical (chat and mail) and the shop's: two incidents; DiskFilling one.
    assert Incident.objects.filter(status="triggered").count() == 3
    oncall = get_user_model().objects.get(username="oncall")
    client.force_login(oncall)
    assert b"HighCPU" in client.get("/alerts/").content
    assert b"HighCPU" in client.get("/alerts/incidents/").content
    # The printed URL takes a real Alertmanager's posts.
    response = post(client, saved["token"], am_payload([am_alert({"alertname": "Ping"})]))
    assert response.status_code == 200
    assert Alert.objects.filter(alertname="Ping", integration=integration).exists()

    settings.VAR_DIR = tmp_path
    printed = []
    (tmp_path / "demo_logins.json").write_text((tmp_path / "logins.json").read_text())
    Command()._announce(type("Sup", (), {"log": lambda self, text: printed.append(text)})(),
                        {"host": "127.0.0.1", "port": 8123, "lab_hosts": 0})
    assert f"http://127.0.0.1:8123{saved['path']}" in printed[0]
    assert f"Bearer {saved['token']}" in printed[0]


def test_demo_alerts_walk_the_demo_escalation_policy_and_page_nobody_outside(tmp_path):
    """The demo's incidents escalate: Platform's on-call first (the demo people have no
    contact yet: recorded as unreachable), then the team chat, which is disabled, so
    nothing leaves the machine. The policy is made once; an admin's choice on the
    integration stays."""
    from alerts import escalation
    from alerts import services as alert_services
    from alerts.models import EscalationPolicy, Incident, IncidentEvent, Integration
    from opsplane.notify.models import Notification

    demo.load(tmp_path / "logins.json")
    demo.load(tmp_path / "logins.json")  # twice: one policy, its steps once
    policy = EscalationPolicy.objects.get()
    assert policy.name == demo.DEMO_ESCALATION and policy.repeat == 1
    assert escalation.describe_steps(policy) == [
        "schedule Platform", "wait 5m", "channel chat"]
    integration = Integration.objects.get(name=demo.DEMO_INTEGRATION)
    assert integration.escalation_policy == policy

    now = timezone.now()
    assert escalation.tick(now)["advanced"] == 3
    open_ = Incident.objects.filter(status=Incident.Status.TRIGGERED)
    assert set(open_.values_list("escalation_policy", flat=True)) == {policy.pk}
    first = IncidentEvent.objects.filter(kind="escalated", detail__step=1)
    assert first.count() == 3
    on_call = {name for detail in first.values_list("detail", flat=True)
               for name in detail["unreachable"]}
    assert on_call and on_call <= {"oncall", "admin"}
    # Five minutes on, nobody acknowledged: the team chat's step, recorded, never sent.
    escalation.tick(now + timedelta(minutes=5))
    rows = Notification.objects.filter(idempotency_key__startswith="alerts:escalation:")
    assert rows.count() == 3
    assert set(rows.values_list("channel__name", "state")) == {("chat", "dead")}

    # An admin who takes the policy off the integration keeps it off.
    admin = get_user_model().objects.get(username="admin")
    alert_services.save_integration(integration, {"escalation_policy": None}, by=admin)
    demo.load(tmp_path / "logins.json")
    integration.refresh_from_db()
    assert integration.escalation_policy is None
