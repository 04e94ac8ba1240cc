"""Metrics the engine already keeps, read only when someone scrapes (zero cost per step).

Gauges (running and waiting requests, KV-cache pages) are the engine's state at scrape time;
the counters (preemptions, prefix-cache lookups and hits, evictions, compilations) are
cumulative totals that the scheduler, the KV-cache manager and the model runner maintain
anyway, so the step loop records nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from esurge_core.kv_cache.stats import KVCacheStats


class SchedulerState(Protocol):
    """What the collector reads from the scheduler."""

    running: list
    num_preemptions: int

    @property
    def num_unfinished(self) -> int:
        """Requests waiting or running."""
        ...


class KVCacheState(Protocol):
    """What the collector reads from the KV-cache allocator."""

    def stats(self) -> KVCacheStats:
        """A snapshot of page usage and the cumulative prefix-cache counters."""
        ...


class RunnerState(Protocol):
    """What the collector reads from the model runner."""

    num_compilations: int


class EngineStateCollector(Collector):
    """Yields the scheduler / KV-cache / runner metrics of one engine at collection time."""

    def __init__(
        self,
        model_name: str,
        scheduler: SchedulerState,
        kv_cache: KVCacheState,
        runner: RunnerState,
    ) -> None:
        self.model_name = model_name
        self.scheduler = scheduler
        self.kv_cache = kv_cache
        self.runner = runner

    def describe(self) -> list[Metric]:
        """The metric families without values (lets the registry check name clashes)."""
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        """The current values."""
        return self._families(self.kv_cache.stats())

    def _families(self, stats: KVCacheStats | None) -> Iterator[Metric]:
        labels = [self.model_name]
        running = len(self.scheduler.running)
        waiting = self.scheduler.num_unfinished - running
        values: list[tuple[type, str, str, float]] = [
            (GaugeMetricFamily, "num_requests_running", "Requests in the running batch.", running),
            (GaugeMetricFamily, "num_requests_waiting", "Requests waiting to run.", waiting),
            (
                GaugeMetricFamily,
                "kv_cache_usage_perc",
                "Share of KV-cache pages referenced by requests (0 to 1).",
                stats.usage if stats else 0.0,
            ),
            (
                GaugeMetricFamily,
                "kv_cache_total_pages",
                "Usable KV-cache pages (the null page excluded).",
                stats.num_pages if stats else 0,
            ),
            (
                GaugeMetricFamily,
                "kv_cache_free_pages",
                "KV-cache pages an allocation can take (empty or evictable cached).",
                stats.num_free_pages if stats else 0,
            ),
            (
                GaugeMetricFamily,
                "kv_cache_cached_pages",
                "KV-cache pages indexed in the prefix cache, in use or free.",
                stats.num_cached_pages if stats else 0,
            ),
            (
                CounterMetricFamily,
                "num_preemptions",
                "Requests preempted (pages freed, recomputed later).",
                self.scheduler.num_preemptions,
            ),
            (
                CounterMetricFamily,
                "prefix_cache_queries",
                "Prompt tokens looked up in the prefix cache.",
                stats.prefix_cache_queries if stats else 0,
            ),
            (
                CounterMetricFamily,
                "prefix_cache_hits",
                "Prompt tokens served from the prefix cache.",
                stats.prefix_cache_hits if stats else 0,
            ),
            (
                CounterMetricFamily,
                "kv_cache_evictions",
                "Cached KV pages that lost their prefix hash (reused or over capacity).",
                stats.num_evictions if stats else 0,
            ),
            (
                CounterMetricFamily,
                "num_compilations",
                "Compilations of the step function (one per new input bucket).",
                self.runner.num_compilations,
            ),
        ]
        for family_type, name, documentation, value in values:
            family = family_type(f"esurge:{name}", documentation, labels=["model_name"])
            family.add_metric(labels, value)
            yield family
