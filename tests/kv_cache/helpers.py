"""Small builders shared by the KV-cache tests."""

from __future__ import annotations

from esurge_core.kv_cache import KVCacheGroupSpec, KVCacheManager

FULL = KVCacheGroupSpec("full", (0, 1))


def sliding(window: int, layers: tuple[int, ...] = (2,)) -> KVCacheGroupSpec:
    """A sliding-window group."""
    return KVCacheGroupSpec("sliding_window", layers, sliding_window=window)


def chunked(chunk: int, layers: tuple[int, ...] = (2,)) -> KVCacheGroupSpec:
    """A chunked-attention group."""
    return KVCacheGroupSpec("chunked", layers, chunk_size=chunk)


def manager(
    num_pages: int = 64,
    page_size: int = 4,
    groups: tuple[KVCacheGroupSpec, ...] = (FULL,),
    **kwargs: object,
) -> KVCacheManager:
    """A small manager (one full-attention group by default)."""
    return KVCacheManager(groups, num_pages=num_pages, page_size=page_size, **kwargs)  # type: ignore[arg-type]


def prefill(m: KVCacheManager, request_id: str, tokens: list[int], **keys: object) -> int:
    """Look up and allocate a whole prompt in one step; returns the prefix hit."""
    hit = m.lookup_prefix(request_id, tokens, **keys)  # type: ignore[arg-type]
    assert m.allocate(request_id, tokens, hit, len(tokens) - hit, **keys)  # type: ignore[arg-type]
    return hit


def held(m: KVCacheManager, request_id: str, group: int = 0) -> list[int]:
    """The real (non-null) pages a request holds in a group."""
    return [page for page in m.page_ids(request_id)[group] if page]
