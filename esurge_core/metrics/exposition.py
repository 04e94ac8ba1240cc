"""Rendering registries in the Prometheus text format, for a server's ``/metrics`` route."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: The ``Content-Type`` header value of ``render_prometheus`` output.
PROMETHEUS_CONTENT_TYPE: str = CONTENT_TYPE_LATEST


def render_prometheus(*registries: CollectorRegistry) -> bytes:
    """Every series of ``registries`` in the Prometheus text exposition format, one after
    the other (e.g. ``render_prometheus(engine.metrics.registry, api_key_metrics.registry)``).

    The registries must not share a metric name (each engine's registry holds only its own).
    """
    if not registries:
        raise ValueError("render_prometheus needs at least one CollectorRegistry")
    return b"".join(generate_latest(registry) for registry in registries)
