"""The core's own defaults, registered through the same hooks as any third-party plugin.

The plugin manager registers this module first, under the ``esurge-core`` distribution; a
third-party plugin that wants to replace a default registers its own component under another
name and users select it in config.
"""

from __future__ import annotations

from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import KVCacheAllocatorRegistrar


@hookimpl
def esurge_register_kv_cache_allocators(register: KVCacheAllocatorRegistrar) -> None:
    """The paged allocator with prefix caching and window-aware page release."""
    register(
        name="paged",
        loader="esurge_core.kv_cache.manager:KVCacheManager",
        description="page pool with LRU prefix cache, per-group page release",
    )
