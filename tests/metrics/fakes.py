"""Stand-ins for the scheduler, KV cache and runner, so metrics tests need no model."""

from __future__ import annotations

from dataclasses import dataclass, field

from esurge_core.kv_cache.stats import KVCacheStats
from esurge_core.metrics import EngineMetrics


@dataclass
class FakeScheduler:
    running: list = field(default_factory=list)
    num_preemptions: int = 0
    num_waiting: int = 0

    @property
    def num_unfinished(self) -> int:
        return len(self.running) + self.num_waiting


@dataclass
class FakeKVCache:
    used: int = 0
    total: int = 100
    queries: int = 0
    hits: int = 0

    def stats(self) -> KVCacheStats:
        return KVCacheStats(
            num_pages=self.total,
            num_used_pages=self.used,
            num_free_pages=self.total - self.used,
            num_cached_pages=self.used,
            num_cached_free_pages=0,
            usage=self.used / self.total,
            num_requests=0,
            prefix_cache_queries=self.queries,
            prefix_cache_hits=self.hits,
            num_evictions=0,
        )


@dataclass
class FakeRunner:
    num_compilations: int = 0


@dataclass
class FakeChoice:
    request: object


@dataclass
class FakeTracker:
    """What ``record_step`` reads from a request tracker: its choices' requests."""

    choices: list[FakeChoice]


@dataclass
class FakeEngine:
    """An ``EngineMetrics`` over fakes the test can change."""

    metrics: EngineMetrics
    scheduler: FakeScheduler
    kv_cache: FakeKVCache
    runner: FakeRunner


def fake_engine(model_name: str = "fake-model") -> FakeEngine:
    """Fresh fakes and an ``EngineMetrics`` reading them."""
    scheduler, kv_cache, runner = FakeScheduler(), FakeKVCache(), FakeRunner()
    metrics = EngineMetrics(
        model_name,
        scheduler=scheduler,
        kv_cache=kv_cache,
        runner=runner,
        max_model_len=256,
        max_num_batched_tokens=64,
    )
    return FakeEngine(metrics, scheduler, kv_cache, runner)
