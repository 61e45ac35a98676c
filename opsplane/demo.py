"""Demo data: roles, one user per role, environments, the lab's hosts, runbooks (and, as
apps grow, alert routes). Like urls.py, this is where the project composes its apps.

Idempotent: a second run changes nothing and keeps the passwords it made the first time
(they live in ``var/demo_logins.json``, readable by this user only, never in the repo).
"""

import json
import os
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

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
