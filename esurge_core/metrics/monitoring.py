"""``Monitoring``: the exporter and console monitor that ``eSurge.start_monitoring`` runs."""

from __future__ import annotations

from dataclasses import dataclass

from esurge_core.metrics.console_monitor import ConsoleMonitor
from esurge_core.metrics.engine_metrics import EngineMetrics
from esurge_core.metrics.exporter import MetricsExporter


@dataclass(slots=True)
class Monitoring:
    """What runs for one engine's monitoring; ``stop()`` ends all of it.

    Attributes:
        exporter: the HTTP exporter, or ``None`` when no Prometheus port was asked for.
        console: the live console view, or ``None`` when not enabled.
    """

    exporter: MetricsExporter | None = None
    console: ConsoleMonitor | None = None

    @classmethod
    def start(
        cls,
        metrics: EngineMetrics,
        *,
        prometheus_port: int | None = None,
        enable_console: bool = False,
        host: str = "127.0.0.1",
        console_refresh_interval: float = 1.0,
    ) -> Monitoring:
        """Start an exporter on ``prometheus_port`` (0: a free port) and/or a console view.

        Raises:
            ValueError: neither a port nor the console was asked for.
            MetricsExporterError: the port cannot be bound.
        """
        if prometheus_port is None and not enable_console:
            raise ValueError(
                "start_monitoring needs prometheus_port (0 for a free port) or "
                "enable_console=True; got neither"
            )
        monitoring = cls()
        if prometheus_port is not None:
            monitoring.exporter = MetricsExporter(metrics.registry, prometheus_port, host)
            monitoring.exporter.start()
        if enable_console:
            try:
                monitoring.console = ConsoleMonitor(
                    metrics, refresh_interval=console_refresh_interval
                )
                monitoring.console.start()
            except BaseException:
                monitoring.stop()  # do not leave the exporter's port bound
                raise
        return monitoring

    @property
    def port(self) -> int | None:
        """The exporter's bound port, or ``None`` without an exporter."""
        return self.exporter.port if self.exporter is not None else None

    @property
    def url(self) -> str | None:
        """The exporter's ``/metrics`` URL, or ``None`` without an exporter."""
        return self.exporter.url if self.exporter is not None else None

    def stop(self) -> None:
        """Stop the exporter and the console view (idempotent)."""
        if self.exporter is not None:
            self.exporter.stop()
        if self.console is not None:
            self.console.stop()
