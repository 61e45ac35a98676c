"""Roles: four Django groups, and the one place that says who may see what.

A role is membership of the group of the same name. ``admin`` (or a superuser) may do
everything an operator, approver or on-call person may; whether someone may *approve*
a given request is the approvals app's question (policies name groups), not a role's.
"""

from functools import wraps

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission


class Role(models.TextChoices):
    OPERATOR = "operator", _("Operator")
    APPROVER = "approver", _("Approver")
    ONCALL = "oncall", _("On-call")
    ADMIN = "admin", _("Admin")


def roles_of(user):
    """The user's roles as a frozenset of ``Role`` values, cached on the user object."""
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    cached = getattr(user, "_opsplane_roles", None)
    if cached is None:
        if user.is_superuser:
            cached = frozenset(Role.values)
        else:
            names = user.groups.filter(name__in=Role.values).values_list("name", flat=True)
            cached = frozenset(names)
        user._opsplane_roles = cached
    return cached


def has_role(user, *roles):
    """True when the user holds one of ``roles``; admins hold them all."""
    held = roles_of(user)
    return Role.ADMIN in held or any(role in held for role in roles)


def require(allowed, message=None):
    """The services' one role check: raise PermissionDenied (403 in views and the API)
    unless ``allowed``."""
    if not allowed:
        raise PermissionDenied(message or _("Your role does not allow this."))


def ensure_role_groups():
    """Create the four role groups (idempotent); returns {role: Group}."""
    return {role: Group.objects.get_or_create(name=role)[0] for role in Role.values}


def role_required(*roles):
    """View decorator: 403 unless the (logged-in) user holds one of ``roles``."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not has_role(request.user, *roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def HasRole(*roles):  # noqa: N802 - reads like a class in permission_classes lists
    """DRF permission class: authenticated and holding one of ``roles``."""

    class _HasRole(BasePermission):
        message = _("This needs one of these roles: %(roles)s.") % {"roles": ", ".join(roles)}

        def has_permission(self, request, view):
            return bool(request.user and has_role(request.user, *roles))

    _HasRole.__name__ = f"HasRole({', '.join(roles)})"
    return _HasRole


# The navigation: (url name, label, roles that see it). Views check the same roles.
NAVIGATION = [
    ("cmdb:index", _("Inventory"), (Role.OPERATOR, Role.ONCALL, Role.APPROVER)),
    ("changes:index", _("Changes"), (Role.OPERATOR, Role.APPROVER, Role.ONCALL)),
    ("approvals:index", _("Approvals"), (Role.APPROVER, Role.OPERATOR)),
    # The board first: what on-call staff open at 3 a.m.
    ("alerts:board", _("Alerts"), (Role.ONCALL, Role.OPERATOR)),
    ("oncall:index", _("On call"), (Role.ONCALL, Role.OPERATOR)),
]
ADMIN_NAVIGATION = [
    ("notify:channels", _("Notifications")),
    ("opsplane:status", _("System")),
    ("admin:index", _("Admin")),
]


def _area(path):
    """The first path segment: an entry is active on every page of its area (the alerts
    entry opens the board, and stays marked on the alert list, silences, routes...)."""
    return path.strip("/").split("/", 1)[0]


def navigation(request):
    """Template context processor: the navigation entries this user may open."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_roles": frozenset()}
    area = _area(request.path)
    items = []
    for url_name, label, roles in NAVIGATION:
        if has_role(user, *roles):
            url = reverse(url_name)
            items.append({"url": url, "label": label, "active": _area(url) == area})
    if has_role(user, Role.ADMIN):
        for url_name, label in ADMIN_NAVIGATION:
            url = reverse(url_name)
            items.append({"url": url, "label": label, "active": _area(url) == area})
    return {"nav_items": items, "user_roles": roles_of(user)}
