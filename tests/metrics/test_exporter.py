"""``MetricsExporter``: serves a registry over HTTP on a chosen or free port, and stops."""

from __future__ import annotations

import socket
import urllib.error

import pytest

from esurge_core.metrics import MetricsExporter, MetricsExporterError

from .fakes import fake_engine
from .scrape import scrape


def test_port_zero_binds_a_free_port_that_serves_the_registry():
    engine = fake_engine()
    engine.runner.num_compilations = 3
    exporter = MetricsExporter(engine.metrics.registry, port=0)
    port = exporter.start()
    try:
        assert port == exporter.port > 0
        assert exporter.url == f"http://127.0.0.1:{port}/metrics"
        assert scrape(exporter.url)[("esurge:num_compilations_total", ())] == 3
    finally:
        exporter.stop()


def test_stop_releases_the_port():
    exporter = MetricsExporter(fake_engine().metrics.registry, port=0)
    port = exporter.start()
    exporter.stop()
    assert not exporter.is_running
    with pytest.raises(urllib.error.URLError):
        scrape(f"http://127.0.0.1:{port}/metrics")


def test_a_port_in_use_raises_an_error_naming_the_address():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        exporter = MetricsExporter(fake_engine().metrics.registry, port=port)
        with pytest.raises(MetricsExporterError, match=f"127.0.0.1:{port}"):
            exporter.start()


def test_a_port_outside_the_tcp_range_is_rejected():
    with pytest.raises(ValueError, match="65535"):
        MetricsExporter(fake_engine().metrics.registry, port=70000)


def test_reading_the_port_before_start_says_to_start_first():
    with pytest.raises(RuntimeError, match="start"):
        _ = MetricsExporter(fake_engine().metrics.registry).port
