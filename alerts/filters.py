"""The filters of the alert and incident lists, shared by the pages and the API."""

from django.db.models import Q
from django.utils import timezone

from alerts.models import Alert, Incident, Severity


def alerts(queryset, params):
    """``status``, ``severity``, ``integration`` (name), ``silenced`` (yes/no), ``host``
    (name or hint), ``q`` (alert name, fingerprint, or a label value)."""
    status = params.get("status", "")
    if status in Alert.Status.values:
        queryset = queryset.filter(status=status)
    severity = params.get("severity", "")
    if severity in Severity.values:
        queryset = queryset.filter(severity=severity)
    if integration := params.get("integration", "").strip():
        queryset = queryset.filter(integration__name=integration)
    silenced = params.get("silenced", "")
    if silenced in ("yes", "1", "true"):
        queryset = queryset.filter(silenced_by__isnull=False,
                                   silenced_by__ends_at__gt=timezone.now())
    elif silenced in ("no", "0", "false"):
        queryset = queryset.filter(Q(silenced_by__isnull=True)
                                   | Q(silenced_by__ends_at__lte=timezone.now()))
    if host := params.get("host", "").strip():
        queryset = queryset.filter(Q(host__name=host) | Q(host_hint=host))
    if q := params.get("q", "").strip():
        queryset = queryset.filter(Q(alertname__icontains=q) | Q(fingerprint=q)
                                   | Q(host_hint__icontains=q))
    return queryset


def incidents(queryset, params):
    """``status`` (an incident status, or ``open``), ``severity``, ``q`` (title)."""
    status = params.get("status", "")
    if status == "open":
        queryset = queryset.filter(status__in=Incident.OPEN)
    elif status in Incident.Status.values:
        queryset = queryset.filter(status=status)
    severity = params.get("severity", "")
    if severity in Severity.values:
        queryset = queryset.filter(severity=severity)
    if q := params.get("q", "").strip():
        queryset = queryset.filter(title__icontains=q)
    return queryset
