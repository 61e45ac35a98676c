"""Prometheus metrics: the registry ``/metrics`` serves, and the metrics every app shares.

Processes of one host (web, Celery's prefork children, beat) count into files under
``PROMETHEUS_MULTIPROC_DIR`` when it is set (``make run`` and the container images set
it); ``/metrics`` on the web process, or the worker's own metrics port
(``OPSPLANE_WORKER_METRICS_PORT``), adds them up. Without it each process keeps its
own in-memory registry, which is right for a single process (tests, shell).

Define metrics here or in an app's ``metrics.py`` with ``prometheus_client`` as usual;
nothing else is needed for them to appear.
"""

import os
import platform

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

CONTENT_TYPE = CONTENT_TYPE_LATEST

heartbeats = Counter(
    "opsplane_heartbeats_total", "Heartbeat tasks executed by Celery workers (sent by beat)."
)


class BuildInfoCollector:
    """``opsplane_build_info{version=...,python=...} 1``: constant, so not a file metric."""

    def collect(self):
        gauge = GaugeMetricFamily(
            "opsplane_build_info", "opsplane build information.", labels=["version", "python"]
        )
        gauge.add_metric([settings.OPSPLANE_VERSION, platform.python_version()], 1)
        yield gauge


def multiprocess_dir():
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


_registry = None
_collectors = []


def register_collector(collector):
    """Add a collector computed at scrape time from the database (e.g. host counts).
    Apps call this from their ``metrics.py``, imported by their AppConfig.ready().

    Only the web process' ``/metrics`` serves these (a worker's metrics port does not),
    so a count appears once however many workers there are."""
    _collectors.append(collector)
    if _registry is not None:
        _registry.register(collector)


def registry():
    """The registry to expose: all processes of this host when multiprocess is on."""
    global _registry
    if _registry is None:
        if multiprocess_dir():
            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            # Process and platform metrics are of the serving process itself.
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
        else:
            reg = REGISTRY
        reg.register(BuildInfoCollector())
        for collector in _collectors:
            reg.register(collector)
        _registry = reg
    return _registry


def render():
    return generate_latest(registry())


def process_exited(pid):
    """Let live gauges of a dead process go (call when a worker child exits)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


def serve_worker_metrics(port, addr="0.0.0.0"):  # noqa: S104 - scraped from outside the container
    """Serve this host's metrics on ``port`` from a worker (one per container/host):
    what its processes counted, without the database-backed collectors."""
    from prometheus_client import start_http_server

    reg = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(reg)
    ProcessCollector(registry=reg)
    start_http_server(port, addr=addr, registry=reg)
