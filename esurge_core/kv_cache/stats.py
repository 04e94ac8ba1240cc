"""A snapshot of the KV cache for metrics: page usage and prefix-cache effectiveness."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KVCacheStats:
    """Counts at one moment; the prefix-cache and eviction counters are cumulative.

    Attributes:
        num_pages: Usable pages (the null page excluded).
        num_used_pages: Pages referenced by at least one request.
        num_free_pages: Pages an allocation can take (empty or evictable cached).
        num_cached_pages: Pages indexed in the prefix cache, in use or free.
        num_cached_free_pages: Free pages still holding a cached prefix.
        usage: num_used_pages / num_pages, in [0, 1].
        num_requests: Requests the manager tracks (holding pages or looked up).
        prefix_cache_queries: Prompt tokens looked up in the prefix cache, ever.
        prefix_cache_hits: Of those, tokens served from the cache, ever.
        num_evictions: Cached pages that lost their hash (reused, over capacity, reset), ever.
    """

    num_pages: int
    num_used_pages: int
    num_free_pages: int
    num_cached_pages: int
    num_cached_free_pages: int
    usage: float
    num_requests: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_evictions: int

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Share of looked-up prompt tokens that hit the cache (0 before any lookup)."""
        if not self.prefix_cache_queries:
            return 0.0
        return self.prefix_cache_hits / self.prefix_cache_queries
