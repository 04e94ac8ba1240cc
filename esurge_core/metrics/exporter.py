"""``MetricsExporter``: a small HTTP server that serves one registry at ``/metrics``.

It wraps prometheus_client's threaded WSGI server, binds to ``127.0.0.1`` unless told
otherwise (metrics reveal traffic; expose them deliberately), accepts port 0 for a free port,
and can be stopped, which a test or a long-lived process embedding several engines needs.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from esurge_core.errors import ESurgeError


class MetricsExporterError(ESurgeError, OSError):
    """The exporter could not bind its address (port in use, no permission, bad host)."""


class MetricsExporter:
    """Serves ``registry`` over HTTP (any path answers with the metrics).

    Args:
        registry: the registry to serve.
        port: TCP port; 0 picks a free one (read it back from ``port`` after ``start``).
        host: address to bind; ``127.0.0.1`` keeps the metrics on this machine.
    """

    def __init__(self, registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1"):
        if not 0 <= port <= 65535:
            raise ValueError(f"the metrics port must be in [0, 65535] (0: a free port); got {port}")
        self.registry = registry
        self.host = host
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def is_running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the free one chosen when the requested port was 0).

        Raises:
            RuntimeError: the exporter is not running.
        """
        if self._server is None:
            raise RuntimeError("the metrics exporter is not running; call start() first")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """``http://host:port/metrics`` of the running exporter."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> int:
        """Start serving in a daemon thread; return the bound port (idempotent).

        Raises:
            MetricsExporterError: the address cannot be bound.
        """
        if self._server is None:
            try:
                self._server, self._thread = start_http_server(
                    self.requested_port, addr=self.host, registry=self.registry
                )
            except OSError as exc:
                raise MetricsExporterError(
                    f"cannot serve metrics on {self.host}:{self.requested_port}: {exc}; "
                    "choose another port, or 0 for a free one"
                ) from exc
        return self.port

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
