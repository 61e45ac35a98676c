"""The alerts app's Prometheus metrics."""

import logging

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client import Counter
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
