"""Demo data: roles, one user per role, environments, the lab's hosts, runbooks, an
approval policy, an on-call schedule, alerts (an Alertmanager integration, channels that
send nowhere, routes, a few alerts) and the escalation policy they walk. Like urls.py,
this is where the project composes its apps.

Idempotent: a second run changes nothing and keeps the passwords it made the first time
(they live in ``var/demo_logins.json``, readable by this user only, never in the repo).
"""

import json
import os
import secrets
from datetime import timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from cmdb import services as cmdb_services
from opsplane.roles import Role, ensure_role_groups

DEMO_USERS = [
    (Role.OPERATOR, "operator"),
    (Role.APPROVER, "approver"),
    (Role.ONCALL, "oncall"),
    (Role.ADMIN, "admin"),
]


def _read(path):
    try:
        return {entry["username"]: entry for entry in json.loads(path.read_text())}
    except FileNotFoundError:
        return {}


@transaction.atomic
def load(logins_path, lab_inventory=None):
    """Create what is missing; return the logins as [{role, username, password}].

    ``lab_inventory`` (the SSH lab's inventory.json, when the lab runs) adds its hosts to
    the inventory with the lab's client key as their credential and their keys pinned."""
    User = get_user_model()
    groups = ensure_role_groups()
    known = _read(logins_path)
    logins = []
    for role, username in DEMO_USERS:
        user = User.objects.filter(username=username).first()
        entry = known.get(username)
        if user is None:
            password = secrets.token_urlsafe(9)
            user = User.objects.create_user(username=username, password=password)
            entry = {"role": str(role), "username": username, "password": password}
        elif entry is None:
            # The user exists but its password was never recorded here (someone made it
            # by hand): leave it alone rather than reset a password we did not set.
            entry = {"role": str(role), "username": username, "password": "(unchanged)"}
        if role == Role.ADMIN and not (user.is_staff and user.is_superuser):
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
        user.groups.add(groups[role])
        logins.append(entry)
    _write(logins_path, logins)
    cmdb_services.ensure_demo_environments()
    admin = User.objects.get(username="admin")
    if lab_inventory is not None and lab_inventory.exists():
        load_lab(json.loads(lab_inventory.read_text()), by=admin)
    load_runbooks(by=admin)
    load_approval_policies(by=admin)
    load_oncall(by=admin)
    load_alerts(logins_path.with_name("demo_alerts.json"), by=admin)
    load_escalation(by=admin)
    return logins


DEMO_RUNBOOKS = {
    "uptime": ("How long each host has been up, and its load.", """
steps:
  - name: uptime
    kind: shell
    command: uptime
"""),
    "restart-service": ("Restart a service, canaries first.", """
parameters:
  - name: service
    type: choice
    choices: [nginx, redis, postgresql]
    required: true
  - name: grace
    type: int
    default: 2
    description: Seconds to wait before checking it came back.
steps:
  - name: restart
    kind: shell
    command: echo "restarting {{ service }} on $(hostname)"; sleep {{ grace }}
    timeout: 60
  - name: check
    kind: shell
    command: echo "{{ service }} is up"
"""),
    "deploy-config": ("Render an application config from the host's facts and upload it.", """
parameters:
  - name: port
    type: int
    default: 8080
  - name: api_token
    type: string
    secret: true
    required: true
steps:
  - name: config
    kind: upload
    template: |
      # managed by opsplane
      listen = {{ port }}
      workers = {{ facts.cpu_count | default(2) }}
      token = {{ api_token }}
    dest: /tmp/opsplane-demo-app.conf
    mode: "0600"
  - name: show
    kind: shell
    command: wc -l /tmp/opsplane-demo-app.conf
"""),
}


DEMO_INTEGRATION = "demo-alertmanager"
# Channels that send nowhere: disabled, and pointing at the discard port of this
# machine, so the demo's notifications are recorded on the outbox page and never leave.
DEMO_CHANNELS = [
    ("chat", "webhook", {}, {"url": "http://127.0.0.1:9/demo-chat"},
     "Team chat (demo: disabled; point it at a real robot and enable it)"),
    ("oncall-mail", "email", {"recipients": ["oncall@example.invalid"]}, {},
     "On-call mailbox (demo: disabled)"),
]
DEMO_ROUTES = """\
# Demo routing tree (manage.py demo). Critical alerts go to chat and the on-call
# mailbox, then on to their team's route; the rest by team; the root sends by severity.
route:
  group_by: [alertname, cluster]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: [alertname="HeartbeatMissing"]
      group_by: [alertname, integration]
      group_wait: 0s
    - matchers: [severity="critical"]
      receiver: critical
      continue: true
    - matchers: [team="shop"]
      receiver: shop
    - matchers: [team="platform"]
      receiver: platform
      repeat_interval: 12h
receivers:
  - name: critical
    channels: [chat, oncall-mail]
  - name: shop
    channels: [chat]
  - name: platform
    channels: [chat]
severity_channels:
  critical: [chat]
  warning: [chat]
  info: []
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [alertname, cluster]
"""


def _demo_alerts(now):
    """A few alerts as Alertmanager posts them: a critical pair on the shop's web hosts
    (one incident), a disk warning on a db host, and one that already resolved."""
    def alert(labels, annotations, started, ended=None):
        return {"status": "resolved" if ended else "firing",
                "labels": {"cluster": "prod", "job": "node", **labels},
                "annotations": annotations, "startsAt": started.isoformat(),
                "endsAt": ended.isoformat() if ended else "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example.invalid/graph"}

    minutes = timedelta(minutes=1)
    return [
        alert({"alertname": "HighCPU", "severity": "critical", "team": "shop",
               "instance": "lab-001:9100"},
              {"summary": "CPU above 95% for 10 minutes on lab-001"}, now - 25 * minutes),
        alert({"alertname": "HighCPU", "severity": "critical", "team": "shop",
               "instance": "lab-002:9100"},
              {"summary": "CPU above 95% for 10 minutes on lab-002"}, now - 20 * minutes),
        alert({"alertname": "DiskFilling", "severity": "warning", "team": "platform",
               "instance": "lab-007:9100", "mountpoint": "/var"},
              {"summary": "/var on lab-007 will be full within 24 hours"},
              now - 90 * minutes),
        alert({"alertname": "TLSCertExpiring", "severity": "info", "team": "platform",
               "instance": "lab-003:9100"},
              {"summary": "Certificate of shop.example.invalid expires in 20 days"},
              now - 3 * 60 * minutes, ended=now - 60 * minutes),
    ]


def load_alerts(path, *, by):
    """An Alertmanager integration (its token kept in ``path``, readable by this user
    only, so ``manage.py up`` can print the intake URL), demo channels that send nowhere,
    a routing tree, and a few alerts so the alert pages are not empty."""
    from alerts import intake, payloads
    from alerts import services as alert_services
    from alerts.models import Alert, Integration, RoutingConfig
    from opsplane.notify.models import Channel
    from opsplane.notify.services import save_channel

    try:
        known = json.loads(path.read_text())
    except FileNotFoundError:
        known = {}
    integration = Integration.objects.filter(name=DEMO_INTEGRATION).first()
    token = known.get("token", "")
    if integration is None:
        integration, token = alert_services.save_integration(Integration(), {
            "name": DEMO_INTEGRATION, "kind": Integration.Kind.ALERTMANAGER,
            "description": "Point an Alertmanager webhook_config at the intake URL "
                           "manage.py up prints.", "enabled": True}, by=by)
    elif alert_services.integration_for_token(token) != integration:
        token = ""  # made or rotated by hand: not ours to show
    _write(path, {"integration": integration.name, "token": token,
                  "path": reverse("api-alerts-intake-token", args=[token]) if token else ""})
    for name, kind, config, secret_fields, description in DEMO_CHANNELS:
        if not Channel.objects.filter(name=name).exists():
            save_channel(Channel(), {"name": name, "kind": kind, "enabled": False,
                                     "description": description, "config": config},
                         secret_fields=secret_fields, by=by)
    if not RoutingConfig.objects.exists():
        alert_services.save_routing(DEMO_ROUTES, by=by, comment="demo routes")
    if not Alert.objects.filter(integration=integration).exists():
        now = timezone.now()
        body = json.dumps({"version": "4", "status": "firing", "receiver": "opsplane",
                           "alerts": _demo_alerts(now)}).encode()
        _envelope, items = payloads.parse_body("alertmanager", body, now)
        intake.ingest(integration, items, envelope={"demo": True}, now=now, source="demo")


def load_oncall(*, by):
    """One on-call schedule: the demo's on-call user and admin take turns, a week each,
    handing over on Mondays at 10:00 Shanghai time."""
    from datetime import time

    from oncall import services as oncall_services
    from oncall.models import Layer, Schedule

    if Schedule.objects.filter(name="Platform").exists():
        return
    User = get_user_model()
    schedule = oncall_services.create_schedule(
        by=by, name="Platform", time_zone="Asia/Shanghai",
        description="Primary on-call for the platform team.")
    today = timezone.localdate()
    oncall_services.create_layer(
        schedule, by=by, name="Primary", rotation=Layer.Rotation.WEEKLY,
        handoff_time=time(10), start_date=today - timedelta(days=today.weekday()),
        participants=[User.objects.get(username="oncall"), User.objects.get(username="admin")])


DEMO_ESCALATION = "platform-primary"


def load_escalation(*, by):
    """An escalation policy: whoever is on call on "Platform", then, unacknowledged
    after 5 minutes, the team chat; the whole of it twice. The demo integration falls
    back to it when it is made (so an admin's later choice there stays)."""
    from alerts import escalation
    from alerts import services as alert_services
    from alerts.models import EscalationPolicy, EscalationStep, Integration
    from oncall.models import Schedule
    from opsplane.notify.models import Channel

    if EscalationPolicy.objects.filter(name=DEMO_ESCALATION).exists():
        return
    K = EscalationStep.Kind
    steps = [{"kind": K.SCHEDULE, "schedule": schedule}
             for schedule in Schedule.objects.filter(name="Platform")]
    steps.append({"kind": K.WAIT, "wait_minutes": 5})
    steps += [{"kind": K.CHANNEL, "channel": chat} for chat in Channel.objects.filter(name="chat")]
    policy = escalation.save_policy(EscalationPolicy(), {
        "name": DEMO_ESCALATION, "repeat": 1,
        "description": "Page whoever is on call on Platform; after 5 minutes without an "
                       "acknowledgement, the team chat too."}, steps, by=by)
    integration = Integration.objects.filter(name=DEMO_INTEGRATION,
                                             escalation_policy__isnull=True).first()
    if integration is not None:
        alert_services.save_integration(integration, {"escalation_policy": policy}, by=by)


def load_approval_policies(*, by):
    """One policy to show how they read: changes on prod hosts need one approver (what
    protected environments get anyway), valid for a day."""
    from approvals import services as approvals_services
    from approvals.models import ApprovalPolicy

    if not ApprovalPolicy.objects.exists():
        approvals_services.save_policy(ApprovalPolicy(), {
            "name": "prod", "description": "Changes on production hosts need an approver.",
            "environments": ["prod"], "requirements": [{"group": "approver", "count": 1}],
            "validity_hours": 24}, by=by)


def load_runbooks(*, by):
    from changes import services as changes_services
    from changes.models import Runbook

    for name, (description, definition) in DEMO_RUNBOOKS.items():
        if not Runbook.objects.filter(name=name).exists():
            changes_services.save_runbook(Runbook(), name=name, description=description,
                                          definition=definition.strip() + "\n", by=by)


# The lab's hosts get roles and zones so selectors have something to choose from:
# lab-001..003 web in zone a, 004..006 web in zone b, 007..008 db, the rest cache;
# the first two are canaries. Environments cycle so each has hosts.
def _lab_labels(index):
    role = "web" if index < 6 else "db" if index < 8 else "cache"
    labels = {"role": role, "zone": "a" if index % 2 == 0 else "b"}
    if index < 2:
        labels["canary"] = "true"
    return labels


def load_lab(inventory, *, by):
    """Put the lab's hosts in the inventory (idempotent: existing hosts are kept)."""
    from cmdb.models import Credential, Environment, Group, Host, HostKey, Service

    credential = Credential.objects.filter(name="lab-key").first()
    if credential is None:
        credential = cmdb_services.save_credential(
            Credential(), {"name": "lab-key", "kind": Credential.Kind.SSH_KEY,
                           "description": "Client key of the SSH lab (make run)"},
            private_key=Path(inventory["client_key"]).read_text(), by=by)
    environments = {e.name: e for e in Environment.objects.all()}
    order = ["prod", "staging", "dev"]
    groups = {}
    for name in ("web", "db", "cache"):
        groups[name] = Group.objects.filter(name=name).first() or cmdb_services.save_group(
            Group(), {"name": name, "description": f"{name} servers"}, by=by)
    existing = set(Host.objects.values_list("name", flat=True))
    for index, entry in enumerate(inventory["hosts"]):
        if entry["name"] in existing:
            continue
        labels = _lab_labels(index)
        host = cmdb_services.save_host(Host(), {
            "name": entry["name"], "address": entry["address"], "port": entry["port"],
            "ssh_user": entry["user"], "environment": environments[order[index % 3]],
            "labels": labels, "groups": [groups[labels["role"]]], "credential": credential,
            "owner_team": "platform", "description": "SSH lab host (loopback)",
        }, by=by)
        cmdb_services.trust_host_key(host, entry["host_key"], by=by,
                                     source=HostKey.Source.KNOWN_HOSTS)
    if not Service.objects.filter(name="storefront").exists():
        cmdb_services.save_service(Service(), {
            "name": "storefront", "tier": Service.Tier.CRITICAL, "owner_team": "shop",
            "description": "The web shop", "hosts": list(groups["web"].hosts.all()),
        }, by=by)


def _write(path, logins):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(logins, fh, indent=2)
    os.replace(tmp, path)
