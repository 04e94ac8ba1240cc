"""``ConsoleMonitor``: one frame of the live view, rendered to text."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from esurge_core.metrics import ConsoleMonitor

from .fakes import fake_engine


def test_a_frame_shows_queues_kv_cache_and_prefix_cache_numbers():
    engine = fake_engine("tiny-model")
    engine.scheduler.running = [object()] * 3
    engine.scheduler.num_waiting = 2
    engine.kv_cache.used, engine.kv_cache.queries, engine.kv_cache.hits = 40, 200, 50
    text = ConsoleMonitor(engine.metrics).render_to_string(width=110)
    assert "tiny-model" in text
    assert "Running" in text and "3" in text
    assert "Waiting" in text
    assert "40.0% used" in text
    assert "25.0%" in text  # prefix-cache hit rate
    assert "60 / 40 of 100" in text  # pages free / cached of total


def test_latency_percentiles_show_a_dash_before_any_request():
    text = ConsoleMonitor(fake_engine().metrics).render_to_string()
    assert "- / -" in text


def test_the_live_view_starts_and_stops():
    output = io.StringIO()
    console = Console(file=output, width=100, force_terminal=True)
    monitor = ConsoleMonitor(fake_engine().metrics, refresh_interval=0.05, console=console)
    monitor.start()
    assert monitor.is_running
    monitor.stop()
    assert not monitor.is_running
    assert "Prefix cache hits" in output.getvalue()


def test_a_non_positive_refresh_interval_is_rejected():
    with pytest.raises(ValueError, match="refresh_interval"):
        ConsoleMonitor(fake_engine().metrics, refresh_interval=0)
