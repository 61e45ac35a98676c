"""Panels other apps' pages load about their subjects (``APPROVALS_SUBJECT_PANELS`` in
settings: approvals imports no other app, so the project wires this panel into its
inbox and request page by URL name).

``subject_open_alerts``: the alerts firing now on a change's target hosts, for the
approver deciding whether to run it. An htmx fragment (``hx-get``, ``hx-trigger="load"``);
opened directly, the same fragment on a page of its own.
"""

from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, Q, Value, When
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers

from alerts.models import SEVERITY_RANK, Alert
from alerts.views import VIEWERS
from changes import services as changes
from changes.models import Change
from opsplane.roles import has_role

LIMIT = 50  # alerts listed; the rest are counted


def open_alerts_on(hosts, *, names=()):
    """Firing alerts on ``hosts`` (a Host queryset), most severe and oldest first.
    ``names``: host names, for alerts whose host was not in the CMDB when they arrived
    (matched by their host hint)."""
    rank = Case(*[When(severity=s, then=Value(r)) for s, r in SEVERITY_RANK.items()],
                default=Value(0), output_field=IntegerField())
    alerts = Alert.objects.filter(
        Q(host__in=hosts) | Q(host__isnull=True, host_hint__in=list(names)),
        status=Alert.Status.FIRING,
    )
    return alerts.select_related("host", "silenced_by").annotate(rank=rank).order_by(
        "-rank", "starts_at", "id")


def subject_open_alerts(request, pk):
    """The open alerts on change ``pk``'s target hosts, for whoever may see the change."""
    change = get_object_or_404(Change, pk=pk)
    if not changes.can_view(request.user, change):
        raise PermissionDenied
    now = timezone.now()
    alerts = open_alerts_on(change.targets.all(), names=change.target_names)
    total = alerts.count()
    shown = list(alerts[:LIMIT])
    for alert in shown:
        alert.is_silenced = (alert.silenced_by is not None
                             and alert.silenced_by.state(now) == "active")
    context = {"change": change, "alerts": shown, "total": total, "more": total - len(shown),
               "hosts": len(change.target_names),
               "silenced": sum(a.is_silenced for a in shown),
               # Approvers see the panel but not the alert pages: no link that answers 403.
               "can_open": has_role(request.user, *VIEWERS)}
    fragment = request.htmx and not request.htmx.boosted
    response = render(request, "alerts/_subject_open_alerts.html" if fragment
                      else "alerts/subject_open_alerts.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response
