"""The alerts app's Prometheus metrics."""

import logging

from django.db import DatabaseError, transaction
from django.db.models import Count
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from opsplane import metrics

logger = logging.getLogger(__name__)

received = Counter("opsplane_alerts_received_total",
                   "Alerts accepted by the intake, by integration and status.",
                   ["integration", "status"])
rejected = Counter("opsplane_alerts_rejected_requests_total",
                   "Intake requests refused, by reason.", ["reason"])
flushes = Counter("opsplane_alerts_notification_rounds_total",
                  "Incident flushes that queued a notification round.")

# Escalation and acknowledgement (alerts/escalation.py, alerts/incidents.py). Counted when
# the transaction commits, so a rolled-back tick or action counts nothing.
RESPONSE_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
time_to_acknowledge = Histogram(
    "opsplane_alerts_time_to_acknowledge_seconds",
    "From an incident's opening to its first acknowledgement.", buckets=RESPONSE_BUCKETS)
time_to_resolve = Histogram(
    "opsplane_alerts_time_to_resolve_seconds",
    "From an incident's opening to its resolution.", buckets=RESPONSE_BUCKETS)
escalation_steps = Counter(
    "opsplane_alerts_escalation_steps_total",
    "Escalation steps taken, by kind (schedule, user, group, channel, wait).", ["kind"])
acknowledgements = Counter(
    "opsplane_alerts_acknowledgements_total",
    "Incidents acknowledged, by where it was done (board, api, link, page).", ["via"])
exhausted = Counter(
    "opsplane_alerts_escalations_exhausted_total",
    "Incidents that walked their escalation policy to the end with nobody acknowledging.")


def on_commit(metric_call):
    transaction.on_commit(metric_call)


def observe_resolved(incident, now):
    seconds = max((now - incident.opened_at).total_seconds(), 0)
    on_commit(lambda: time_to_resolve.observe(seconds))


def count_received(integration, result):
    name = integration.name if integration is not None else "(internal)"
    for status, count in result.counts.items():
        received.labels(integration=name, status=status).inc(count)


class OpenIncidentsCollector:
    """``opsplane_alerts_open_incidents{severity}`` computed at scrape with one GROUP BY."""

    def collect(self):
        from alerts.models import Incident, Severity

        gauge = GaugeMetricFamily("opsplane_alerts_open_incidents",
                                  "Incidents not resolved yet, by severity.", labels=["severity"])
        try:
            rows = dict(Incident.objects.filter(status__in=Incident.OPEN)
                        .values_list("severity").annotate(n=Count("id")).order_by())
        except DatabaseError:
            logger.warning("opsplane_alerts_open_incidents: database unavailable", exc_info=True)
            return
        for severity in Severity.values:
            gauge.add_metric([severity], rows.get(severity, 0))
        yield gauge


metrics.register_collector(OpenIncidentsCollector())
