"""``ApiKeyMetrics``: per-key-label usage counters a server records into."""

from __future__ import annotations

import pytest

from esurge_core.metrics import ApiKeyMetrics, render_prometheus

from .fakes import fake_engine
from .scrape import parse


def test_requests_and_tokens_are_counted_per_key_label():
    metrics = ApiKeyMetrics()
    metrics.record_request("team-a", prompt_tokens=10, completion_tokens=5)
    metrics.record_request("team-a", prompt_tokens=3, completion_tokens=2)
    metrics.record_request("team-b", prompt_tokens=7, completion_tokens=0)
    values = parse(render_prometheus(metrics.registry).decode())
    team_a, team_b = (("key_label", "team-a"),), (("key_label", "team-b"),)
    assert values[("esurge:api_key_requests_total", team_a)] == 2
    assert values[("esurge:api_key_prompt_tokens_total", team_a)] == 13
    assert values[("esurge:api_key_completion_tokens_total", team_a)] == 7
    assert values[("esurge:api_key_requests_total", team_b)] == 1
    assert values[("esurge:api_key_prompt_tokens_total", team_b)] == 7


def test_render_prometheus_joins_the_engine_and_api_key_registries():
    engine, keys = fake_engine(), ApiKeyMetrics()
    keys.record_request("ops", prompt_tokens=1, completion_tokens=1)
    values = parse(render_prometheus(engine.metrics.registry, keys.registry).decode())
    assert ("esurge:api_key_requests_total", (("key_label", "ops"),)) in values
    assert ("esurge:num_requests_running", ()) in values


def test_an_empty_key_label_is_rejected():
    with pytest.raises(ValueError, match="1 to 128 characters"):
        ApiKeyMetrics().record_request("", prompt_tokens=1, completion_tokens=1)


def test_a_negative_token_count_is_rejected():
    with pytest.raises(ValueError, match="prompt_tokens=-1"):
        ApiKeyMetrics().record_request("a", prompt_tokens=-1, completion_tokens=0)


def test_render_prometheus_needs_a_registry():
    with pytest.raises(ValueError, match="at least one"):
        render_prometheus()
