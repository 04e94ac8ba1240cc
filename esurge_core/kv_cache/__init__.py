"""The paged KV cache: page pool, prefix cache, per-group page tables and memory sizing.

The scheduler talks to `KVCacheManager`; the model declares `KVCacheGroupSpec`s; the engine
sizes the pool with `plan_kv_cache` / `plan_kv_cache_for_device`. See docs/kv_cache.md.
Importing this package does not import or initialise JAX.
"""

from esurge_core.kv_cache.groups import AttentionPattern, KVCacheGroupSpec, validate_groups
from esurge_core.kv_cache.manager import KVCacheManager, PrefixHitLostError
from esurge_core.kv_cache.page_pool import NULL_PAGE
from esurge_core.kv_cache.sizing import (
    KVCachePlan,
    KVCacheTooSmallError,
    bytes_per_page,
    plan_kv_cache,
    plan_kv_cache_for_device,
)
from esurge_core.kv_cache.stats import KVCacheStats

__all__ = [
    "NULL_PAGE",
    "AttentionPattern",
    "KVCacheGroupSpec",
    "KVCacheManager",
    "KVCachePlan",
    "KVCacheStats",
    "KVCacheTooSmallError",
    "PrefixHitLostError",
    "bytes_per_page",
    "plan_kv_cache",
    "plan_kv_cache_for_device",
    "validate_groups",
]
