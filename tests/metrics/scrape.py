"""Helpers of the metrics tests: scrape an exporter and index its samples."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """``{(sample name, labels without model_name): value}`` of a text exposition."""
    values: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "model_name"))
            values[(sample.name, labels)] = sample.value
    return values


def scrape(url: str) -> Samples:
    """GET ``url`` and parse the Prometheus text it returns."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse(response.read().decode())


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    """How much the sample ``name{labels}`` grew between two scrapes."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)
