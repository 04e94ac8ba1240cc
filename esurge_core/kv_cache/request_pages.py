"""What the KV-cache manager remembers about one request between engine steps."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestPages:
    """Page tables and prefix-cache bookkeeping of one request.

    Attributes:
        root_hash: Parent hash of the first page (binds `cache_salt` and `lora_id`).
        cache_salt: Tenant salt the request was looked up / allocated with.
        lora_id: Adapter id the request was looked up / allocated with.
        page_tables: One positional table per group: entry i covers token positions
            [i * page_size, (i + 1) * page_size); released entries are 0 (the null page).
            Empty until the first allocation.
        page_hashes: Chain hashes of the request's full pages computed so far.
        started: The first allocation succeeded (the request holds pages).
        num_computed_tokens: `num_computed_tokens` of the latest allocation.
        num_registered_pages: Pages [0, n) have been offered to the prefix cache.
        next_release_at: Smallest `num_computed_tokens` at which a sliding-window or chunked
            group has a page to release (sys.maxsize: never); lets steps skip the scan.
        released_until: Per group, entries below this index are released (0).
        hit_tokens: Usable prefix hit from the latest `lookup_prefix`, before the first
            allocation.
        counted_queries: Tokens this request added to the query counter (not yet started).
        counted_hits: Tokens this request added to the hit counter (not yet started).
    """

    root_hash: bytes
    cache_salt: str | None
    lora_id: int | str | None
    page_tables: tuple[list[int], ...]
    released_until: list[int]
    page_hashes: list[bytes] = field(default_factory=list)
    started: bool = False
    num_computed_tokens: int = 0
    num_registered_pages: int = 0
    next_release_at: int = sys.maxsize
    hit_tokens: int = 0
    counted_queries: int = 0
    counted_hits: int = 0
