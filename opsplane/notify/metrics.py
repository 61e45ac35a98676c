"""Metrics of the notification outbox: counters in the worker, the outbox's state at
scrape time (registered with ``opsplane.metrics``)."""

import logging

from django.db import DatabaseError
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from opsplane import metrics

logger = logging.getLogger(__name__)

sent = Counter("opsplane_notify_sent_total",
               "Notifications delivered, by channel kind.", ["kind"])
failed = Counter("opsplane_notify_failed_total",
                 "Delivery attempts that failed, by channel kind.", ["kind"])
retried = Counter("opsplane_notify_retried_total",
                  "Retries scheduled after a failed attempt, by channel kind.", ["kind"])
dead = Counter("opsplane_notify_dead_total",
               "Notifications given up on (attempts spent, channel disabled).", ["kind"])
folded = Counter("opsplane_notify_folded_total",
                 "Notifications folded into a digest by a channel's rate budget.", ["kind"])


class OutboxCollector:
    """``opsplane_notify_outbox_oldest_seconds``: the age of the oldest row not yet
    delivered (0 when none); ``opsplane_notify_outbox_rows{state}`` for those states."""

    def collect(self):
        from opsplane.notify.models import Notification

        open_states = ("pending", "sending", "failed", "held")
        try:
            rows = dict(Notification.objects.filter(state__in=open_states)
                        .values_list("state").annotate(n=Count("id")).order_by())
            oldest = Notification.objects.filter(state__in=open_states).aggregate(
                at=Min("created_at"))["at"]
        except DatabaseError:
            logger.warning("notify outbox metrics: database unavailable", exc_info=True)
            return
        age = GaugeMetricFamily("opsplane_notify_outbox_oldest_seconds",
                                "Age of the oldest notification not yet delivered.")
        age.add_metric([], (timezone.now() - oldest).total_seconds() if oldest else 0.0)
        yield age
        count = GaugeMetricFamily("opsplane_notify_outbox_rows",
                                  "Notifications not yet delivered, by state.",
                                  labels=["state"])
        for state in open_states:
            count.add_metric([state], rows.get(state, 0))
        yield count


metrics.register_collector(OutboxCollector())
