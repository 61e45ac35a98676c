"""The inventory's Prometheus metrics."""

import logging
from collections import defaultdict

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from opsplane import metrics

logger = logging.getLogger(__name__)

fact_runs = Counter(
    "opsplane_cmdb_fact_gathering_total",
    "Fact gathering attempts per host, by result (ok or the failure reason).",
    ["result"],
)


class HostsCollector:
    """``opsplane_cmdb_hosts{environment,state}`` computed at scrape with one GROUP BY."""

    def collect(self):
        from cmdb.models import Host

        gauge = GaugeMetricFamily("opsplane_cmdb_hosts", "Hosts in the inventory.",
                                  labels=["environment", "state"])
        try:
            rows = list(Host.objects.values_list("environment__name", "enabled",
                                                 "host_key_state")
                        .annotate(n=Count("id")).order_by())
        except DatabaseError:
            # A database outage must not take the other metrics down with it.
            logger.warning("opsplane_cmdb_hosts: database unavailable", exc_info=True)
            return
        # Several rows fold into one state (unknown and trusted keys are both "enabled"):
        # add them up, as one label set may appear only once in an exposition.
        counts = defaultdict(int)
        for environment, enabled, key_state, count in rows:
            state = "disabled" if not enabled else (
                "host_key_changed" if key_state == "changed" else "enabled")
            counts[environment, state] += count
        for (environment, state), count in sorted(counts.items()):
            gauge.add_metric([environment, state], count)
        yield gauge


metrics.register_collector(HostsCollector())
