"""The approvals app's Prometheus metrics."""

import logging

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from opsplane import metrics

logger = logging.getLogger(__name__)

HOUR = 3600
decision_seconds = Histogram(
    "opsplane_approval_decision_seconds",
    "From a request (or its new round) being opened to its approval or rejection.",
    ["outcome"],
    buckets=(60, 300, 900, 1800, HOUR, 4 * HOUR, 8 * HOUR, 24 * HOUR, 72 * HOUR, 168 * HOUR),
)
freeze_refusals = Counter(
    "opsplane_approval_freeze_refusals_total",
    "Approvals, schedules and starts refused because a freeze window was open.",
    ["stage"],
)
emergency_bypasses = Counter(
    "opsplane_approval_emergency_bypasses_total",
    "Emergency bypasses of approval and freeze windows.",
)


class RequestsCollector:
    """``opsplane_approval_requests{state}`` computed at scrape with one GROUP BY."""

    def collect(self):
        from approvals.models import ApprovalRequest

        gauge = GaugeMetricFamily("opsplane_approval_requests",
                                  "Approval requests by state.", labels=["state"])
        try:
            counts = dict(ApprovalRequest.objects.values_list("status")
                          .annotate(n=Count("id")).order_by())
        except DatabaseError:
            logger.warning("opsplane_approval_requests: database unavailable", exc_info=True)
            return
        for state in ApprovalRequest.Status.values:
            gauge.add_metric([state], counts.get(state, 0))
        yield gauge


metrics.register_collector(RequestsCollector())
