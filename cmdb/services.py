"""Every write of the inventory and the rules that go with it.

Views, the API, tasks and tests call these functions; each checks the caller's role,
validates through the model (``full_clean``), writes in one transaction and records an
audit event with the fields that changed. Credential plaintext never leaves this module
except inside an SSH ``ConnectionSpec``.
"""

import asyncssh
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone
from django.utils.translation import gettext as _

from cmdb.models import Credential, Environment, Group, Host, HostKey, Service
from opsplane import audit, ssh
from opsplane import secrets as vault
from opsplane.errors import DomainError
from opsplane.roles import Role, has_role, require


class CMDBError(DomainError):
    """A rule of the inventory refused the request; the message is for the user."""


# --- who may do what -----------------------------------------------------------------


def can_view(user):
    return has_role(user, Role.OPERATOR, Role.APPROVER, Role.ONCALL)


def can_edit(user):
    """Hosts, groups and services: operators (and admins)."""
    return has_role(user, Role.OPERATOR)


def can_admin(user):
    """Credentials, environments, re-trusting host keys: admins only."""
    return has_role(user, Role.ADMIN)


def _require(allowed):
    require(allowed, _("Your role does not allow this change to the inventory."))


# --- audit helpers ---------------------------------------------------------------------

HOST_FIELDS = ["name", "address", "port", "ssh_user", "environment", "labels", "groups",
               "owner_team", "description", "enabled", "credential", "variables"]


def host_snapshot(host):
    """The audited view of a host: plain JSON values, names instead of ids, no secrets."""
    return {
        "name": host.name, "address": host.address, "port": host.port,
        "ssh_user": host.ssh_user,
        "environment": host.environment.name if host.environment_id else None,
        "labels": dict(sorted(host.labels.items())),
        "groups": sorted(g.name for g in host.groups.all()) if host.pk else [],
        "owner_team": host.owner_team, "description": host.description,
        "enabled": host.enabled,
        "credential": host.credential.name if host.credential_id else None,
        "variables": host.variables,
    }


def diff(before, after):
    return {key: [before.get(key), after[key]] for key in after if before.get(key) != after[key]}


def _apply(instance, data, fields):
    unknown = set(data) - set(fields)
    if unknown:
        raise CMDBError(_("Unknown fields: %(f)s") % {"f": ", ".join(sorted(unknown))})
    for key, value in data.items():
        setattr(instance, key, value)


# --- environments ------------------------------------------------------------------------

DEMO_ENVIRONMENTS = [
    ("dev", "Development", False),
    ("staging", "Staging", False),
    ("prod", "Production", True),
]


def ensure_demo_environments():
    """dev, staging and prod (protected); existing ones are left as they are."""
    return [
        Environment.objects.get_or_create(
            name=name, defaults={"description": description, "protected": protected}
        )[0]
        for name, description, protected in DEMO_ENVIRONMENTS
    ]


def save_environment(environment, data, *, by, request=None):
    _require(can_admin(by))
    fields = ("name", "description", "protected")
    before = {} if environment.pk is None else {
        f: getattr(Environment.objects.get(pk=environment.pk), f) for f in fields}
    _apply(environment, data, fields)
    environment.full_clean()
    with transaction.atomic():
        created = environment.pk is None
        environment.save()
        after = {f: getattr(environment, f) for f in fields}
        audit.record("environment.create" if created else "environment.update", by=by,
                     obj=environment, request=request, detail={"changes": diff(before, after)})
    return environment


# --- hosts ---------------------------------------------------------------------------------


def save_host(host, data, *, by, request=None):
    """Create (``host.pk is None``) or update a host from ``data`` (model field values;
    ``groups`` as Group objects). Validation errors raise ``ValidationError`` with
    per-field messages."""
    _require(can_edit(by))
    created = host.pk is None
    # From the database: a form may already have put the new values on ``host``.
    before = {} if created else host_snapshot(Host.objects.get(pk=host.pk))
    groups = data.pop("groups", None)
    _apply(host, data, HOST_FIELDS)
    host.full_clean()
    with transaction.atomic():
        host.save()
        if groups is not None:
            host.groups.set(groups)
        after = host_snapshot(host)
        changes = diff(before, after)
        if created or changes:
            audit.record("host.create" if created else "host.update", by=by, obj=host,
                         request=request, detail={"changes": changes})
    return host


def delete_host(host, *, by, request=None):
    _require(can_edit(by))
    with transaction.atomic():
        audit.record("host.delete", by=by, obj=host, request=request,
                      detail={"snapshot": host_snapshot(host)})
        host.delete()


def bulk_edit_labels(hosts, *, set_labels=None, remove_keys=(), by, request=None):
    """Set and remove labels on many hosts at once; returns how many changed."""
    from cmdb.models import validate_labels

    _require(can_edit(by))
    set_labels = dict(set_labels or {})
    validate_labels(set_labels)
    changed, details = [], {}
    with transaction.atomic():
        for host in hosts.select_for_update().only("id", "name", "labels"):
            labels = {k: v for k, v in host.labels.items() if k not in remove_keys}
            labels.update(set_labels)
            if labels != host.labels:
                details[host.pk] = {"changes": {"labels": [host.labels, labels]}}
                host.labels = labels
                host.updated_at = timezone.now()
                changed.append(host)
        Host.objects.bulk_update(changed, ["labels", "updated_at"], batch_size=500)
        audit.record_many("host.update", changed, by=by, request=request, details=details)
    return len(changed)


# --- groups ------------------------------------------------------------------------------


def save_group(group, data, *, by, request=None):
    """Create or update a group; ``parents`` (Group objects) is checked for cycles."""
    _require(can_edit(by))
    created = group.pk is None
    parents = data.pop("parents", None)
    before = {} if created else _group_snapshot(Group.objects.get(pk=group.pk))
    _apply(group, data, ["name", "description", "variables"])
    group.full_clean()
    with transaction.atomic():
        group.save()
        if parents is not None:
            _check_no_cycle(group, parents)
            group.parents.set(parents)
        changes = diff(before, _group_snapshot(group))
        if created or changes:
            audit.record("group.create" if created else "group.update", by=by, obj=group,
                         request=request, detail={"changes": changes})
    return group


def _group_snapshot(group):
    return {"name": group.name, "description": group.description,
            "variables": group.variables,
            "parents": sorted(p.name for p in group.parents.all()) if group.pk else []}


def _check_no_cycle(group, parents):
    """Refuse parents that are the group itself or nested below it."""
    through = Group.parents.through
    edges = {}
    for child_id, parent_id in through.objects.values_list("from_group_id", "to_group_id"):
        edges.setdefault(parent_id, set()).add(child_id)
    below, stack = set(), [group.pk]
    while stack:
        for child in edges.get(stack.pop(), ()):
            if child not in below:
                below.add(child)
                stack.append(child)
    for parent in parents:
        if parent.pk == group.pk or parent.pk in below:
            raise ValidationError({"parents": _(
                "“%(parent)s” is nested inside “%(group)s”: making it a parent would create "
                "a cycle."
            ) % {"parent": parent.name, "group": group.name}})


def delete_group(group, *, by, request=None):
    _require(can_edit(by))
    with transaction.atomic():
        audit.record("group.delete", by=by, obj=group, request=request,
                     detail={"snapshot": _group_snapshot(group)})
        group.delete()


# --- services ---------------------------------------------------------------------------


def save_service(service, data, *, by, request=None):
    _require(can_edit(by))
    created = service.pk is None
    hosts = data.pop("hosts", None)
    fields = ["name", "description", "owner_team", "tier"]
    before = {} if created else _service_snapshot(Service.objects.get(pk=service.pk))
    _apply(service, data, fields)
    service.full_clean()
    with transaction.atomic():
        service.save()
        if hosts is not None:
            service.hosts.set(hosts)
        changes = diff(before, _service_snapshot(service))
        audit.record("service.create" if created else "service.update", by=by, obj=service,
                     request=request, detail={"changes": changes})
    return service


def _service_snapshot(service):
    fields = {f: getattr(service, f) for f in ("name", "description", "owner_team", "tier")}
    # The hosts are part of what a service is: who added or removed one is audited too.
    fields["hosts"] = sorted(service.hosts.values_list("name", flat=True)) if service.pk else []
    return fields


def delete_service(service, *, by, request=None):
    _require(can_edit(by))
    with transaction.atomic():
        audit.record("service.delete", by=by, obj=service, request=request)
        service.delete()


# --- credentials -------------------------------------------------------------------------


def save_credential(credential, data, *, private_key=None, passphrase=None, password=None,
                    by, request=None):
    """Create or update a credential. The secret is replaced only when given; it is
    checked (a key must parse and open with its passphrase) before anything is stored."""
    _require(can_admin(by))
    created = credential.pk is None
    old_kind = None if created else Credential.objects.get(pk=credential.pk).kind
    _apply(credential, data, ["name", "kind", "description"])
    secret_given = bool(private_key or password)
    if created and not secret_given:
        raise ValidationError({"secret": _("A new credential needs its key or password.")})
    if not secret_given and old_kind != credential.kind:
        # The stored secret is of the old kind: a key is no password, and vice versa.
        field = "private_key" if credential.kind == Credential.Kind.SSH_KEY else "password"
        raise ValidationError({field: _("A credential that changes kind needs its new "
                                         "secret.")})
    if secret_given:
        if credential.kind == Credential.Kind.SSH_KEY:
            if not private_key:
                raise ValidationError({"private_key": _("Paste the SSH private key.")})
            key = _load_private_key(private_key, passphrase)
            credential.public_key = key.export_public_key().decode().strip()
            credential.fingerprint = key.get_fingerprint("sha256")
            material = {"private_key": private_key, "passphrase": passphrase or None}
        else:
            if not password:
                raise ValidationError({"password": _("Enter the password.")})
            credential.public_key = credential.fingerprint = ""
            material = {"password": password}
        credential.secret = vault.encrypt(material)
    credential.full_clean(exclude=["secret"])
    with transaction.atomic():
        credential.save()
        audit.record("credential.create" if created else "credential.update", by=by,
                     obj=credential, request=request,
                     detail={"kind": credential.kind, "secret_replaced": secret_given,
                             "fingerprint": credential.fingerprint})
    return credential


def _load_private_key(text, passphrase):
    # asyncssh tells the cases apart only by its messages: an encrypted key without a
    # passphrase and a PEM/PKCS#8 key with a wrong one are KeyImportErrors, a wrong
    # passphrase on an OpenSSH-format key a KeyEncryptionError, and so is a missing
    # bcrypt module, which that format's key derivation needs.
    try:
        return asyncssh.import_private_key(text.strip() + "\n", passphrase or None)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
        message = str(exc)
    if "bcrypt" in message:
        error = {"passphrase": _("Keys in this format need the bcrypt module to open with "
                                 "a passphrase, and it is not installed.")}
    elif "Passphrase must be specified" in message:
        error = {"passphrase": _("This key is encrypted: enter its passphrase.")}
    elif passphrase and ("decrypt" in message or "passphrase" in message):
        error = {"passphrase": _("The passphrase does not open this key.")}
    else:
        error = {"private_key": _("This is not an SSH private key asyncssh can read "
                                  "(OpenSSH, PEM or PKCS#8 format).")}
    raise ValidationError(error)


def delete_credential(credential, *, by, request=None):
    _require(can_admin(by))
    try:
        with transaction.atomic():
            audit.record("credential.delete", by=by, obj=credential, request=request)
            credential.delete()
    except ProtectedError:
        count = credential.hosts.count()
        raise CMDBError(_("%(n)d hosts use this credential; give them another one first.")
                        % {"n": count}) from None


def rotate_credentials():
    """Re-encrypt every credential with the newest key; returns how many.

    The rows stay locked from read to write, so a secret an admin saves meanwhile is not
    overwritten with the old one. One unreadable credential stops the rotation before
    anything is written."""
    with transaction.atomic():
        credentials = list(Credential.objects.select_for_update().order_by("pk"))
        for credential in credentials:
            credential.secret = vault.rotate(credential.secret)
        Credential.objects.bulk_update(credentials, ["secret"], batch_size=200)
        audit.record_many("credential.rotate", credentials, source="rotate_credentials")
    return len(credentials)


# --- SSH connection specs ------------------------------------------------------------------


def connection_spec(host, *, connect_timeout=10):
    """What ``opsplane.ssh.connect`` needs to reach ``host``: address, user, the pinned host
    keys and the decrypted credential. Call where the connection is made; don't keep it."""
    keys = [k.key for k in host.host_keys.all()]
    client_keys, passphrase, password = (), None, None
    if host.credential_id:
        material = vault.decrypt(host.credential.secret)
        if host.credential.kind == Credential.Kind.SSH_KEY:
            client_keys = [asyncssh.import_private_key(material["private_key"].strip() + "\n",
                                                       material.get("passphrase"))]
        else:
            password = material["password"]
    return ssh.ConnectionSpec(
        host=host.connect_address, port=host.port, username=host.ssh_user,
        client_keys=client_keys, passphrase=passphrase, password=password,
        host_keys=keys, connect_timeout=connect_timeout, name=host.name,
    )


# --- host keys ------------------------------------------------------------------------------


def trust_host_key(host, key=None, *, by, source=HostKey.Source.MANUAL, request=None):
    """Pin ``key`` (OpenSSH one-line public key) for a host that has none pinned yet;
    without ``key``, the key the host presents now (trust on first use).

    A host whose key changed needs ``retrust_host_key`` (admins only)."""
    if by is None:
        # The system (a scheduled fact run) may only pin on first contact.
        _require(source == HostKey.Source.FIRST_CONTACT)
    else:
        _require(can_edit(by))
    if not key:  # only now: whoever may not pin must not make us connect either
        key = fetch_presented_key(host)
    key, fingerprint = _normalise_public_key(key)
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.host_key_state == Host.HostKeyState.CHANGED:
            raise CMDBError(_("The host key of %(host)s changed; an admin must re-trust it.")
                            % {"host": host.name})
        pinned, created = HostKey.objects.get_or_create(
            host=host, key=key,
            defaults={"fingerprint": fingerprint, "source": source, "trusted_by": by},
        )
        if created:
            Host.objects.filter(pk=host.pk).update(host_key_state=Host.HostKeyState.TRUSTED)
            audit.record("host.trust_key", by=by, obj=host, request=request,
                         source="" if by else "worker",
                         detail={"fingerprint": fingerprint, "source": source})
    return pinned


def record_host_key_mismatch(host, presented_key):
    """A connection was offered a key that is not pinned: mark the host red until an
    admin re-trusts it. Called by whatever connected (facts, changes)."""
    key, fingerprint = _normalise_public_key(presented_key)
    with transaction.atomic():
        updated = Host.objects.filter(pk=host.pk).exclude(
            host_key_state=Host.HostKeyState.CHANGED, presented_host_key=key
        ).update(host_key_state=Host.HostKeyState.CHANGED, presented_host_key=key,
                 presented_host_key_at=timezone.now())
        if updated:
            audit.record("host.key_changed", obj=host, source="worker",
                         detail={"presented_fingerprint": fingerprint})


def retrust_host_key(host, *, by, request=None):
    """Admin: replace the pinned keys with the key the host now presents."""
    _require(can_admin(by))
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.host_key_state != Host.HostKeyState.CHANGED or not host.presented_host_key:
            raise CMDBError(_("%(host)s has no changed host key to re-trust.")
                            % {"host": host.name})
        key, fingerprint = _normalise_public_key(host.presented_host_key)
        old = list(host.host_keys.values_list("fingerprint", flat=True))
        host.host_keys.all().delete()
        HostKey.objects.create(host=host, key=key, fingerprint=fingerprint,
                               source=HostKey.Source.RETRUST, trusted_by=by)
        Host.objects.filter(pk=host.pk).update(
            host_key_state=Host.HostKeyState.TRUSTED, presented_host_key="",
            presented_host_key_at=None,
        )
        audit.record("host.retrust_key", by=by, obj=host, request=request,
                     detail={"old": old, "new": fingerprint})


def _normalise_public_key(text):
    """(``"type base64"``, ``"SHA256:..."``) of an OpenSSH public key line, or
    ``ValidationError``. Comments are dropped: only the key material is pinned."""
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise ValidationError({"key": _("Not an OpenSSH public key.")}) from None
    line = key.export_public_key().decode().split()
    return f"{line[0]} {line[1]}", key.get_fingerprint("sha256")


# --- facts -----------------------------------------------------------------------------------


def gather_facts(hosts, *, by=None, concurrency=50, timeout=60):
    """Gather facts over SSH from ``hosts`` (a queryset) and store them; returns
    ``{host name: outcome}``. Failures are stored per host with their reason and never
    stop the others.

    On first contact (no key pinned yet) a run someone started pins the key the host
    presents, recorded as trusted by them; a scheduled run (``by=None``) does not: it
    reports the host as needing a key instead.
    """
    import asyncio

    from cmdb import facts as facts_module
    from cmdb import metrics

    if by is not None:
        _require(can_edit(by))
    hosts = list(hosts.select_related("credential").prefetch_related("host_keys"))
    if by is not None:
        _pin_on_first_contact([h for h in hosts if not h.host_keys.all()], by=by,
                              timeout=min(timeout, 15), concurrency=concurrency)
        hosts = list(Host.objects.filter(pk__in=[h.pk for h in hosts])
                     .select_related("credential").prefetch_related("host_keys"))
    specs, outcomes = [], {}
    for host in hosts:
        try:
            specs.append(connection_spec(host, connect_timeout=min(timeout, 15)))
        except vault.SecretUnreadable as exc:
            outcomes[host.name] = facts_module.Outcome(host.name, reason="credential",
                                                       detail=str(exc))
    for outcome in asyncio.run(facts_module.gather(specs, concurrency=concurrency,
                                                   timeout=timeout)):
        outcomes[outcome.name] = outcome
    _store_facts(hosts, outcomes)
    for outcome in outcomes.values():
        metrics.fact_runs.labels(result=outcome.reason or "ok").inc()
    return outcomes


def _pin_on_first_contact(hosts, *, by, timeout, concurrency):
    import asyncio

    async def fetch_all():
        limit = asyncio.Semaphore(concurrency)

        async def fetch(host):
            async with limit:
                return await ssh.fetch_host_key(host.connect_address, host.port,
                                                timeout=timeout)

        return await asyncio.gather(*(fetch(h) for h in hosts), return_exceptions=True)

    for host, key in zip(hosts, asyncio.run(fetch_all()) if hosts else [], strict=True):
        if isinstance(key, str):  # unreachable hosts stay unpinned; the run reports why
            trust_host_key(host, key, by=by, source=HostKey.Source.FIRST_CONTACT)


def _store_facts(hosts, outcomes):
    now = timezone.now()
    by_name = {h.name: h for h in hosts}
    done, failed = [], []
    for name, outcome in outcomes.items():
        host = by_name[name]
        if outcome.facts is not None:
            host.facts, host.facts_updated_at = outcome.facts, now
            host.facts_error, host.facts_error_detail, host.facts_error_at = "", "", None
            done.append(host)
        else:
            host.facts_error = outcome.reason
            host.facts_error_detail = outcome.detail[:2000]
            host.facts_error_at = now
            failed.append(host)
            if outcome.reason == "host_key" and outcome.presented_key:
                record_host_key_mismatch(host, outcome.presented_key)
    with transaction.atomic():
        Host.objects.bulk_update(done, ["facts", "facts_updated_at", "facts_error",
                                        "facts_error_detail", "facts_error_at"],
                                 batch_size=500)
        Host.objects.bulk_update(failed, ["facts_error", "facts_error_detail",
                                          "facts_error_at"], batch_size=500)


def fetch_presented_key(host, *, timeout=10):
    """The host key ``host`` presents right now (trust on first use asks this)."""
    import asyncio

    try:
        return asyncio.run(ssh.fetch_host_key(host.connect_address, host.port,
                                              timeout=timeout))
    except ssh.SSHError as exc:
        raise CMDBError(_("Cannot read the host key of %(host)s: %(error)s")
                        % {"host": host.name, "error": exc}) from None


def queue_fact_gathering(hosts, *, by):
    """Ask a worker to gather facts from ``hosts``; returns how many were queued."""
    from cmdb import tasks

    _require(can_edit(by))
    ids = list(hosts.filter(enabled=True).values_list("id", flat=True))
    for start in range(0, len(ids), tasks.CHUNK):
        chunk = ids[start:start + tasks.CHUNK]
        transaction.on_commit(lambda chunk=chunk: tasks.gather_facts.delay(chunk, by.pk))
    return len(ids)


def import_known_hosts(text, *, by, request=None):
    """Pin host keys from an OpenSSH known_hosts file for hosts that have none yet.

    Matches each inventory host by name and address (hashed entries and ``[host]:port``
    included, as OpenSSH matches them). Hosts that already pin a different key are
    reported, never changed: that is what re-trusting is for. Returns a report dict:
    ``pinned``, ``unchanged``, ``conflicts`` (host names) and ``errors`` ({line, message}).
    """
    _require(can_edit(by))
    errors = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if fields[0].startswith("@"):
            errors.append({"line": number, "message": _(
                "%(marker)s lines are not imported; pin plain host keys only."
            ) % {"marker": fields[0]}})
            continue
        try:
            asyncssh.import_public_key(" ".join(fields[1:3]))
        except (asyncssh.KeyImportError, ValueError, IndexError):
            errors.append({"line": number, "message": _(
                "Expected “host[,host…] key-type base64-key”.")})
    known = asyncssh.import_known_hosts(text)
    report = {"pinned": [], "unchanged": [], "conflicts": [], "errors": errors}
    hosts = Host.objects.prefetch_related("host_keys")
    for host in hosts:
        # Entries may name the host or its address; asyncssh checks both as host names.
        names = {host.name, host.address} - {""}
        lines = {ssh.public_key_line(key) for name in names
                 for key in known.match(name, "", host.port)[0]}
        if not lines:
            continue
        pinned = {k.key for k in host.host_keys.all()}
        if pinned & lines:
            report["unchanged"].append(host.name)
        elif pinned:
            report["conflicts"].append(host.name)
        else:
            for line in sorted(lines):
                trust_host_key(host, line, by=by, source=HostKey.Source.KNOWN_HOSTS,
                               request=request)
            report["pinned"].append(host.name)
    return report
