"""A point-in-time reading of an engine's metrics, for the console monitor and callers."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Engine metrics at one moment; counters are cumulative since the engine started.

    Attributes:
        time: ``time.monotonic()`` when taken.
        num_requests_running / num_requests_waiting: the scheduler's queues.
        kv_cache_usage: share of KV-cache pages in use, in [0, 1].
        kv_cache_free_pages / kv_cache_cached_pages / kv_cache_total_pages: page counts.
        prompt_tokens / generation_tokens: tokens processed / generated, ever.
        finished_requests: requests finished for any reason, ever.
        requests_by_reason: finished requests per finish reason, ever.
        num_preemptions / num_compilations: cumulative counts.
        prefix_cache_queries / prefix_cache_hits: prompt tokens looked up / hit, ever.
        spec_decode_draft_tokens / spec_decode_accepted_tokens: n-gram draft tokens verified /
            accepted, ever (docs/speculative_decoding.md).
        ttft_p50 / ttft_p99 / e2e_p50 / e2e_p99: percentiles, in seconds, over the rolling
            window of recent requests (``None`` before the first one).
    """

    time: float
    num_requests_running: int
    num_requests_waiting: int
    kv_cache_usage: float
    kv_cache_free_pages: int
    kv_cache_cached_pages: int
    kv_cache_total_pages: int
    prompt_tokens: int
    generation_tokens: int
    finished_requests: int
    requests_by_reason: dict[str, int]
    num_preemptions: int
    num_compilations: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    spec_decode_draft_tokens: int
    spec_decode_accepted_tokens: int
    ttft_p50: float | None
    ttft_p99: float | None
    e2e_p50: float | None
    e2e_p99: float | None

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Share of looked-up prompt tokens that hit the prefix cache (0 before any lookup)."""
        if not self.prefix_cache_queries:
            return 0.0
        return self.prefix_cache_hits / self.prefix_cache_queries


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values (``None`` when empty)."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]
