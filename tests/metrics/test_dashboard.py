"""docs/grafana_dashboard.json and docs/monitoring.md name only series the registries export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from esurge_core.metrics import ApiKeyMetrics

from .fakes import fake_engine

DOCS = Path(__file__).resolve().parents[2] / "docs"
METRIC_NAME = re.compile(r"esurge:[a-zA-Z0-9_:]+")


def exported_sample_names() -> set[str]:
    keys = ApiKeyMetrics()
    keys.record_request("label", prompt_tokens=1, completion_tokens=1)
    names = set()
    for registry in (fake_engine().metrics.registry, keys.registry):
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
    return names


def expressions(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in expressions(value)]
    return []


def test_every_dashboard_query_uses_exported_metric_names():
    dashboard = json.loads((DOCS / "grafana_dashboard.json").read_text())
    queries = expressions(dashboard)
    assert queries
    used = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert used - exported_sample_names() == set()


def test_every_exported_metric_is_documented_in_monitoring_md():
    documented = set(METRIC_NAME.findall((DOCS / "monitoring.md").read_text()))
    for registry in (fake_engine().metrics.registry, ApiKeyMetrics().registry):
        for family in registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            assert name in documented, f"docs/monitoring.md does not mention {name}"
