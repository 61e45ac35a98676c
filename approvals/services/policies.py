"""Approval policies: which match a subject, what they demand, editing and YAML."""

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from approvals import matching, policy_io
from approvals.models import DEFAULT_GROUP, DEFAULT_VALIDITY_HOURS, ApprovalPolicy
from approvals.services.access import can_edit_policies, require
from opsplane import audit
from opsplane.notify.models import Channel


def _policy_hosts(policy, hosts):
    """The hosts a policy covers: all when it sets no host condition."""
    if not policy.environments and not policy.selector:
        return list(hosts)
    return matching.hosts_matching(hosts, environments=policy.environments,
                                   selector=policy.selector)


def matching_policies(subject, policies=None):
    """The enabled policies that match ``subject``, each with the hosts it covers."""
    if policies is None:
        policies = ApprovalPolicy.objects.filter(enabled=True)
    found = []
    for policy in policies:
        if policy.runbooks and subject.runbook not in policy.runbooks:
            continue
        if not matching.risk_at_least(subject.risk, policy.min_risk):
            continue
        covered = _policy_hosts(policy, subject.hosts)
        if covered:
            found.append((policy, covered))
    return found


def default_requirement(environments):
    return {"policy": "", "environments": sorted(environments),
            "requirements": [{"group": DEFAULT_GROUP, "count": 1}], "allow_author": False,
            "rejection_ends": True, "validity_hours": DEFAULT_VALIDITY_HOURS,
            "channels": list(settings.APPROVALS_DEFAULT_CHANNELS)}


def requirements_for(subject, policies=None):
    """What approving ``subject`` takes: a list of requirement sets, all to be met.

    Every matching policy is one set. A host in a protected environment that no matching
    policy covers brings in that environment's default (one approver, never the author):
    a policy about dev hosts must not let the prod hosts of the same change through."""
    found = matching_policies(subject, policies)
    snapshot = [{"policy": p.name, "requirements": list(p.requirements),
                 "allow_author": p.allow_author, "rejection_ends": p.rejection_ends,
                 "validity_hours": p.validity_hours, "channels": list(p.channels)}
                for p, _ in found]
    covered = {h.name for _, hosts in found for h in hosts}
    uncovered = {h.environment for h in subject.hosts
                 if h.environment in subject.protected_environments and h.name not in covered}
    if uncovered:
        snapshot.append(default_requirement(uncovered))
    return snapshot


def unknown_channels(names):
    """The names among ``names`` that are no notification channel, sorted."""
    known = set(Channel.objects.filter(name__in=list(names)).values_list("name", flat=True))
    return sorted(set(names) - known)


def _clean_policy(data):
    """Check a policy's fields (a dict in model terms); ``ValidationError`` by field."""
    errors = {}
    try:
        matching.parse_selector(data.get("selector", ""))
    except matching.SelectorError as exc:
        errors["selector"] = [exc.message]
    requirements = data.get("requirements") or []
    if not requirements:
        errors["requirements"] = [_("Require at least one approval.")]
    names = [r.get("group") for r in requirements]
    missing = sorted(set(names) - set(Group.objects.filter(name__in=names)
                                      .values_list("name", flat=True)))
    if missing:
        errors["requirements"] = [_("No group named %(names)s.") % {
            "names": ", ".join(missing)}]
    elif len(set(names)) != len(names):
        errors["requirements"] = [_("Name each group once; add up the counts instead.")]
    for r in requirements:
        if not isinstance(r.get("count"), int) or not 1 <= r["count"] <= 20:
            errors["requirements"] = [_("Counts are whole numbers from 1 to 20.")]
    channels = list(data.get("channels") or [])
    unknown = unknown_channels(channels)
    if unknown:
        errors["channels"] = [_("No notification channel named %(names)s.") % {
            "names": ", ".join(unknown)}]
    elif len(set(channels)) != len(channels):
        errors["channels"] = [_("Name each channel once.")]
    if errors:
        raise ValidationError(errors)


def save_policy(policy, data, *, by, request=None):
    """Create or edit a policy from a dict of model fields. Admins only. Open requests
    keep what the policies said when they were opened."""
    require(can_edit_policies(by))
    _clean_policy(data)
    created = policy.pk is None
    before = policy_io.dump([policy]) if not created else ""
    for field, value in data.items():
        setattr(policy, field, value)
    policy.full_clean()
    with transaction.atomic():
        policy.save()
        audit.record("approval_policy.create" if created else "approval_policy.edit", by=by,
                     obj=policy, request=request,
                     detail={"policy": policy_io.dump([policy]), "before": before})
    return policy


def delete_policy(policy, *, by, request=None):
    require(can_edit_policies(by))
    with transaction.atomic():
        audit.record("approval_policy.delete", by=by, obj=policy, request=request,
                     detail={"policy": policy_io.dump([policy])})
        policy.delete()


def export_policies():
    return policy_io.dump(ApprovalPolicy.objects.order_by("name"))


def import_policies(text, *, by, request=None, prune=False):
    """Create or update the policies of a YAML document (by name), all or nothing;
    with ``prune``, delete the policies it does not name. Raises
    ``policy_io.PolicyFileError`` naming each bad field. Returns (created, updated,
    deleted) name lists."""
    require(can_edit_policies(by))
    items = policy_io.parse(text)
    names = {r["group"] for item in items for r in item["requirements"]}
    known = set(Group.objects.filter(name__in=names).values_list("name", flat=True))
    errors = {}
    for index, item in enumerate(items):
        for j, r in enumerate(item["requirements"]):
            if r["group"] not in known:
                errors[f"policies[{index}].require[{j}].group"] = \
                    f"no group named '{r['group']}'"
        missing = set(unknown_channels(item["channels"]))
        for j, name in enumerate(item["channels"]):
            if name in missing:
                errors[f"policies[{index}].notify[{j}]"] = \
                    f"no notification channel named '{name}'"
    if errors:
        raise policy_io.PolicyFileError(errors)
    created, updated, deleted = [], [], []
    with transaction.atomic():
        existing = {p.name: p for p in ApprovalPolicy.objects.select_for_update()}
        for item in items:
            policy = existing.get(item["name"]) or ApprovalPolicy()
            (updated if policy.pk else created).append(item["name"])
            for field, value in item.items():
                setattr(policy, field, value)
            policy.save()
        if prune:
            for name, policy in existing.items():
                if name not in {i["name"] for i in items}:
                    policy.delete()
                    deleted.append(name)
        audit.record("approval_policy.import", by=by, request=request,
                     detail={"created": created, "updated": updated, "deleted": deleted})
    return created, updated, deleted
