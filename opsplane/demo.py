"""Demo data: roles, one user per role, environments (and, as apps grow, lab hosts,
runbooks and alert routes). Like urls.py, this is where the project composes its apps.

Idempotent: a second run changes nothing and keeps the passwords it made the first time
(they live in ``var/demo_logins.json``, readable by this user only, never in the repo).
"""

import json
import os
import secrets

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
def load(logins_path):
    """Create what is missing; return the logins as [{role, username, password}]."""
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
    return logins


def _write(path, logins):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(logins, fh, indent=2)
    os.replace(tmp, path)
