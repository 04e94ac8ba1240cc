"""``GET /metrics``: the engine's series plus per-key usage, labelled by key label only."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import API_KEY

pytestmark = pytest.mark.slow


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_requires_the_key_when_keys_are_required(http):
    assert http.get("/metrics").status_code == 401


def test_metrics_serves_engine_and_per_key_series_that_match_usage(api_server, http, client, model):
    client.completions.create(model=model, prompt="Hello", max_tokens=3)
    response = http.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert API_KEY not in response.text
    values = samples(response.text)
    usage = api_server.usage()["tests"]
    label = (("key_label", "tests"),)
    assert values[("esurge:api_key_prompt_tokens_total", label)] == usage.prompt_tokens
    assert values[("esurge:api_key_completion_tokens_total", label)] == usage.completion_tokens
    assert values[("esurge:api_key_requests_total", label)] == usage.requests
    assert any(name == "esurge:generation_tokens_total" for name, _ in values)
