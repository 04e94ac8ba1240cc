"""Monitoring of the engine: Prometheus metrics, an HTTP exporter and a live console view.

Every engine owns an ``EngineMetrics`` (``engine.metrics``) with its own
``CollectorRegistry``, so several engines in one process never collide. The engine records
into it once per step; gauges and cumulative counters that the engine already keeps (running
and waiting requests, KV-cache pages, prefix-cache lookups, preemptions, compilations) are read
only when someone scrapes. ``engine.start_monitoring(...)`` starts the HTTP exporter and/or the
console monitor; a server renders the same registry with ``render_prometheus``.
See docs/monitoring.md for every metric.
"""

from esurge_core.metrics.api_key_metrics import ApiKeyMetrics
from esurge_core.metrics.console_monitor import ConsoleMonitor
from esurge_core.metrics.engine_metrics import EngineMetrics
from esurge_core.metrics.exporter import MetricsExporter, MetricsExporterError
from esurge_core.metrics.exposition import PROMETHEUS_CONTENT_TYPE, render_prometheus
from esurge_core.metrics.monitoring import Monitoring
from esurge_core.metrics.snapshot import MetricsSnapshot

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "ApiKeyMetrics",
    "ConsoleMonitor",
    "EngineMetrics",
    "MetricsExporter",
    "MetricsExporterError",
    "MetricsSnapshot",
    "Monitoring",
    "render_prometheus",
]
