"""Who may do what in approvals: the errors services raise, group membership as
policies mean it, and the permission questions views and the API ask."""

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _

from approvals.models import EMERGENCY_GROUP, ApprovalRequest
from opsplane.errors import DomainError
from opsplane.roles import Role, has_role


class ApprovalError(DomainError):
    pass


class NotCleared(ApprovalError):
    """The subject may not start now; the message says why (and until when)."""


class Frozen(NotCleared):
    pass


# --- who is who ------------------------------------------------------------------------------


def group_names(user):
    """Names of the user's Django groups (cached on the user object)."""
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    cached = getattr(user, "_approvals_groups", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._approvals_groups = cached
    return cached


def in_group(user, name):
    """Membership as policies mean it. Superusers are in every group; for the four role
    groups, admins too (as everywhere in opsplane)."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    if name in Role.values:
        return has_role(user, name)
    return name in group_names(user)


def is_emergency_approver(user):
    return in_group(user, EMERGENCY_GROUP)


def can_see_all(user):
    """Approvers (and admins) see every request; operators see their own."""
    return has_role(user, Role.APPROVER)


def can_view(user, req):
    return can_see_all(user) or (req.author_id is not None and req.author_id == user.pk) \
        or bool(eligible_groups(user, req))


def can_edit_policies(user):
    return has_role(user, Role.ADMIN)


can_edit_windows = can_edit_policies


def can_read_setup(user):
    """Policies, windows and the calendar: everyone who composes or approves changes."""
    return has_role(user, Role.OPERATOR, Role.APPROVER, Role.ONCALL)


def require(allowed, message=None):
    if not allowed:
        raise PermissionDenied(message or _("Your role does not allow this."))


def access_request(user, pk):
    """The request ``pk`` if ``user`` may see it: ``Http404`` when there is none,
    ``PermissionDenied`` when they may not (pages and the API both look it up here)."""
    req = get_object_or_404(ApprovalRequest.objects.select_related("author"), pk=pk)
    require(can_view(user, req), "You may not see this request.")
    return req


def groups_in(snapshot):
    return sorted({r["group"] for s in snapshot for r in s["requirements"]})


def eligible_groups(user, req):
    """The requirement groups ``user`` counts for in this round (none for an author the
    policies keep out)."""
    groups = set()
    for entry in req.requirements:
        if not entry["allow_author"] and req.author_id == user.pk:
            continue
        groups |= {r["group"] for r in entry["requirements"] if in_group(user, r["group"])}
    return groups
