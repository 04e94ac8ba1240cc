"""The KV-cache manager: the scheduler's only door to pages.

Per engine step the scheduler calls, for each request it schedules:

* `lookup_prefix` once before a request's first allocation (again after a preemption):
  how many prompt tokens are already cached, page aligned, never the whole prompt;
* `allocate` with the request's known token ids, `num_computed_tokens` and the number of
  tokens it will compute now: all or nothing, in every group;
* `free` when the request finishes, is aborted or is preempted.

The runner reads `page_ids` / `fill_page_table` to build the kernel's page tables. Every
call does work proportional to the pages it changes, not to the request's history: page
tables grow by appending, hashes are computed only for pages that just became full, and
window-aware release resumes where it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Sequence

import numpy as np

from esurge_core.errors import ConfigError, ESurgeError
from esurge_core.kv_cache.groups import KVCacheGroupSpec, validate_groups
from esurge_core.kv_cache.page_hashing import TokenIds, encode_token_ids, hash_bytes, root_page_hash
from esurge_core.kv_cache.page_pool import NULL_PAGE, PagePool
from esurge_core.kv_cache.request_pages import RequestPages
from esurge_core.kv_cache.stats import KVCacheStats

RequestId = Hashable

_FULL = 0
_SLIDING = 1
_CHUNKED = 2
_NEVER = sys.maxsize


class PrefixHitLostError(ESurgeError, RuntimeError):
    """Pages of a prefix hit were evicted between `lookup_prefix` and the first `allocate`."""


class KVCacheManager:
    """Paged KV cache with prefix caching and attention-pattern-aware page release.

    Args:
        groups: The model's KV-cache groups (`model.kv_cache_groups()`), one page table each.
        num_pages: Pages in the shared pool, the null page 0 included (see `plan_kv_cache`).
        page_size: Tokens per page, the same for every group.
        enable_prefix_caching: Reuse full pages of equal prefixes across requests.
        prefix_cache_capacity: Largest share (0..1) of usable pages that may sit in the
            prefix cache unreferenced; beyond it the least recently freed are evicted.

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(
        self,
        groups: Sequence[KVCacheGroupSpec],
        num_pages: int,
        page_size: int,
        enable_prefix_caching: bool = True,
        prefix_cache_capacity: float = 1.0,
    ) -> None:
        validate_groups(groups)
        if page_size < 1:
            raise ConfigError(f"page_size must be >= 1; got {page_size}.")
        if num_pages < 2:
            raise ConfigError(
                f"num_pages must be >= 2 (the null page and at least one usable page); "
                f"got {num_pages}. Give the KV cache more memory."
            )
        if not 0.0 <= prefix_cache_capacity <= 1.0:
            raise ConfigError(
                f"prefix_cache_capacity must be in [0, 1]; got {prefix_cache_capacity}."
            )
        self.groups: tuple[KVCacheGroupSpec, ...] = tuple(groups)
        self.num_pages = num_pages
        self.page_size = page_size
        self.enable_prefix_caching = enable_prefix_caching
        self.prefix_cache_capacity = prefix_cache_capacity
        capacity_pages = int(prefix_cache_capacity * (num_pages - 1))
        self._pool = PagePool(num_pages, len(self.groups), capacity_pages)
        self._num_groups = len(self.groups)
        # (group index, kind, window or chunk) of the groups that release pages early.
        self._releasing: tuple[tuple[int, int, int], ...] = tuple(
            (index, _SLIDING, group.sliding_window)
            if group.pattern == "sliding_window"
            else (index, _CHUNKED, group.chunk_size)
            for index, group in enumerate(self.groups)
            if group.pattern != "full"
        )  # type: ignore[misc]
        self._requests: dict[RequestId, RequestPages] = {}
        self._prefix_queries = 0
        self._prefix_hits = 0

    # ------------------------------------------------------------------ queries

    @property
    def num_free_pages(self) -> int:
        """Pages an allocation can take now (empty ones and evictable cached ones)."""
        return self._pool.num_free_pages

    @property
    def num_usable_pages(self) -> int:
        """Pages that requests can hold (the null page excluded)."""
        return self.num_pages - 1

    def __contains__(self, request_id: RequestId) -> bool:
        return request_id in self._requests

    def page_ids(self, request_id: RequestId) -> tuple[list[int], ...]:
        """The request's page tables, one positional list per group (0 = released/null).

        These are the manager's live lists, returned without a copy so the call is O(1):
        read them, never modify them. They are empty before the first allocation.

        Raises:
            KeyError: the manager does not know the request.
        """
        try:
            return self._requests[request_id].page_tables
        except KeyError:
            raise KeyError(
                f"request {request_id!r} holds no KV-cache pages (never allocated or freed)."
            ) from None

    def fill_page_table(
        self, request_id: RequestId, tables: Sequence[np.ndarray], row: int
    ) -> None:
        """Write the request's page ids into `tables[g][row]` for every group g, zero-padded.

        Args:
            request_id: The request.
            tables: One int32 array [max_num_seqs, pages_per_seq] per group.
            row: The request's row in this step's batch.

        Raises:
            ValueError: a table is too narrow for the request's pages.
        """
        page_tables = self.page_ids(request_id)
        for table, pages in zip(tables, page_tables, strict=True):
            count = len(pages)
            if count > table.shape[1]:
                raise ValueError(
                    f"request {request_id!r} has {count} pages but the page table holds only "
                    f"{table.shape[1]} per sequence; size it as ceil(max_model_len / page_size)."
                )
            out = table[row]
            out[:count] = pages
            out[count:] = NULL_PAGE

    def stats(self) -> KVCacheStats:
        """A snapshot of page usage and the cumulative prefix-cache counters."""
        pool = self._pool
        usable = self.num_pages - 1
        free = pool.num_free_pages
        used = usable - free
        return KVCacheStats(
            num_pages=usable,
            num_used_pages=used,
            num_free_pages=free,
            num_cached_pages=sum(len(index) for index in pool.cached),
            num_cached_free_pages=pool.num_cached_free_pages,
            usage=used / usable,
            num_requests=len(self._requests),
            prefix_cache_queries=self._prefix_queries,
            prefix_cache_hits=self._prefix_hits,
            num_evictions=pool.num_evictions,
        )

    # ------------------------------------------------------------------ prefix lookup

    def lookup_prefix(
        self,
        request_id: RequestId,
        token_ids: TokenIds,
        cache_salt: str | None = None,
        lora_id: int | str | None = None,
    ) -> int:
        """Number of leading prompt tokens whose K/V is cached, usable by every group.

        Call it before the request's first `allocate` (and again after a preemption), then
        pass the result as that allocation's `num_computed_tokens` right away: the hit pages
        are not reserved until `allocate` takes them.

        Args:
            request_id: The request.
            token_ids: The request's prompt (after a preemption: prompt + generated tokens).
            cache_salt: Tenant salt; requests with different salts never share pages.
            lora_id: Adapter id; requests with different adapters never share pages.

        Returns:
            A multiple of `page_size`, smaller than `len(token_ids)`, so that the last prompt
            token is always computed (its logits are needed). For a sliding-window or chunked
            group only the pages the next query can see need to be cached.

        Raises:
            ValueError: the request already holds pages (free it first).
        """
        state = self._requests.get(request_id)
        if state is None:
            state = self._new_request(request_id, cache_salt, lora_id)
        else:
            if state.started:
                raise ValueError(
                    f"lookup_prefix({request_id!r}): the request already holds pages; a "
                    "lookup is only for a request before its first allocate (free it first "
                    "when preempting)."
                )
            self._check_extra_keys(request_id, state, cache_salt, lora_id)
        num_tokens = len(token_ids)
        hit = self._find_hit(state, token_ids) if self.enable_prefix_caching else 0
        # Count each admission once, even when the scheduler retries it over several steps.
        self._prefix_queries += num_tokens - state.counted_queries
        self._prefix_hits += hit - state.counted_hits
        state.counted_queries = num_tokens
        state.counted_hits = hit
        state.hit_tokens = hit
        return hit

    def _find_hit(self, state: RequestPages, token_ids: TokenIds) -> int:
        page_size = self.page_size
        max_pages = (len(token_ids) - 1) // page_size
        if max_pages <= 0:
            return 0
        hashes = self._extend_hashes(state, token_ids, max_pages)[:max_pages]
        # For each group, the length of the run of cached pages ending at each index.
        runs: list[list[int]] = []
        for index in self._pool.cached:
            run: list[int] = []
            length = 0
            for page_hash_ in hashes:
                length = length + 1 if page_hash_ in index else 0
                run.append(length)
            runs.append(run)
        groups = self.groups
        num_pages = max_pages
        while True:  # shrink until every group accepts the hit; m = 0 always does
            candidate = num_pages
            for group, run in zip(groups, runs):
                while candidate:
                    first = group.first_visible_position(candidate * page_size) // page_size
                    if run[candidate - 1] >= candidate - first:
                        break
                    candidate -= 1
            if candidate == num_pages:
                return num_pages * page_size
            num_pages = candidate

    # ------------------------------------------------------------------ allocation

    def allocate(
        self,
        request_id: RequestId,
        token_ids: TokenIds,
        num_computed_tokens: int,
        num_new_tokens: int,
        *,
        cache_salt: str | None = None,
        lora_id: int | str | None = None,
        num_known_tokens: int | None = None,
    ) -> bool:
        """Give the request pages for positions [0, num_computed_tokens + num_new_tokens).

        All or nothing: either every group gets every page the step needs, or nothing
        changes and the result is False (preempt someone, or retry next step). On success
        the request also releases pages its sliding-window / chunked groups can no longer
        see, and full pages whose tokens are known are published to the prefix cache. A True
        result commits the scheduler to compute these tokens this step (their pages may be
        hit by later requests); if it drops them, pass `num_computed_tokens` to `free`.

        Args:
            request_id: The request.
            token_ids: Every known token of the request, prompt + generated (list or array).
            num_computed_tokens: Tokens whose K/V is already in pages. On the first call it
                is 0 or the value `lookup_prefix` just returned.
            num_new_tokens: Tokens the request computes this step (>= 1).
            cache_salt: Tenant salt, used when the request is new to the manager.
            lora_id: Adapter id, used when the request is new to the manager.
            num_known_tokens: How many leading entries of `token_ids` are real token ids
                (default: all). Asynchronous scheduling computes a token that a running step
                is still sampling; a page holding such a placeholder is published by a later
                call, once its tokens are known.

        Raises:
            ValueError: the token counts are inconsistent.
            PrefixHitLostError: a prefix hit was evicted before this first allocation.
        """
        end = num_computed_tokens + num_new_tokens
        num_ids = len(token_ids)
        if num_new_tokens < 1 or num_computed_tokens < 0 or end > num_ids:
            raise ValueError(
                f"allocate({request_id!r}): need num_new_tokens >= 1, num_computed_tokens >= 0 "
                f"and num_computed_tokens + num_new_tokens <= len(token_ids); got "
                f"{num_computed_tokens} + {num_new_tokens} with {num_ids} token ids."
            )
        known = num_ids if num_known_tokens is None else min(num_known_tokens, num_ids)
        state = self._requests.get(request_id)
        if state is None or not state.started:
            return self._allocate_first(
                request_id, state, token_ids, num_computed_tokens, end, known, cache_salt, lora_id
            )
        if num_computed_tokens < state.num_computed_tokens:
            raise ValueError(
                f"allocate({request_id!r}): num_computed_tokens went back from "
                f"{state.num_computed_tokens} to {num_computed_tokens}; free the request and "
                "allocate it again to recompute."
            )
        page_size = self.page_size
        grow = (end + page_size - 1) // page_size - len(state.page_tables[0])
        # Fast path (most decode steps): no new page, nothing falls out of a window.
        if (grow > 0 or num_computed_tokens >= state.next_release_at) and not self._grow(
            state, num_computed_tokens, grow
        ):
            return False
        state.num_computed_tokens = num_computed_tokens
        num_full = min(end, known) // page_size
        if num_full > state.num_registered_pages and self.enable_prefix_caching:
            self._register_full_pages(state, token_ids, num_full)
        return True

    def _grow(self, state: RequestPages, num_computed_tokens: int, grow: int) -> bool:
        """Release invisible pages and append `grow` pages per group; all or nothing."""
        pool = self._pool
        if grow > 0:
            needed = grow * self._num_groups
            if needed > pool.num_free_pages and (
                not self._releasing
                or needed > pool.num_free_pages + self._count_releasable(state, num_computed_tokens)
            ):
                return False
        if num_computed_tokens >= state.next_release_at:
            self._release_invisible(state, num_computed_tokens)
        if grow > 0:
            for group_index, table in enumerate(state.page_tables):
                table.extend(pool.take(grow, group_index))
        return True

    def _allocate_first(
        self,
        request_id: RequestId,
        state: RequestPages | None,
        token_ids: TokenIds,
        num_computed_tokens: int,
        end: int,
        num_known: int,
        cache_salt: str | None,
        lora_id: int | str | None,
    ) -> bool:
        is_new = state is None
        if state is None:  # registered only on success, so a refusal leaves no trace
            state = self._new_request(request_id, cache_salt, lora_id, register=False)
        else:
            self._check_extra_keys(request_id, state, cache_salt, lora_id)
        page_size = self.page_size
        pool = self._pool
        hit_pages = num_computed_tokens // page_size
        if num_computed_tokens:
            if num_computed_tokens != state.hit_tokens:
                raise ValueError(
                    f"allocate({request_id!r}): the first allocation needs num_computed_tokens "
                    f"0 or the prefix hit {state.hit_tokens} that lookup_prefix returned; got "
                    f"{num_computed_tokens}."
                )
            hit_tables = self._hit_tables(request_id, state, num_computed_tokens)
        else:
            hit_tables = [[] for _ in self.groups]
        revived = sum(
            1 for table in hit_tables for page in table if page and pool.ref_counts[page] == 0
        )
        grow = (end + page_size - 1) // page_size - hit_pages
        if grow * self._num_groups + revived > pool.num_free_pages:
            return False
        # Take the hit pages first, so that taking new pages cannot evict them.
        for table in hit_tables:
            for page in table:
                if page:
                    pool.acquire(page)
        for group_index, table in enumerate(hit_tables):
            table.extend(pool.take(grow, group_index))
        if is_new:
            self._requests[request_id] = state
        state.page_tables = tuple(hit_tables)
        state.released_until = [
            group.first_visible_position(num_computed_tokens) // page_size for group in self.groups
        ]
        state.next_release_at = self._next_release_at(state.released_until)
        state.started = True
        state.num_computed_tokens = num_computed_tokens
        state.num_registered_pages = hit_pages
        # The lookup counted a hit the scheduler may have declined (num_computed_tokens = 0).
        self._prefix_hits += num_computed_tokens - state.counted_hits
        state.counted_queries = state.counted_hits = state.hit_tokens = 0
        if self.enable_prefix_caching:
            num_full = min(end, num_known) // page_size
            if num_full > hit_pages:
                self._register_full_pages(state, token_ids, num_full)
        return True

    def _hit_tables(
        self, request_id: RequestId, state: RequestPages, num_tokens: int
    ) -> list[list[int]]:
        """Cached pages of a hit of `num_tokens` tokens, per group (0 outside the window)."""
        page_size = self.page_size
        hit_pages = num_tokens // page_size
        hashes = state.page_hashes
        tables: list[list[int]] = []
        for group, index in zip(self.groups, self._pool.cached):
            first = group.first_visible_position(num_tokens) // page_size
            table = [NULL_PAGE] * first
            for position in range(first, hit_pages):
                page = index.get(hashes[position])
                if page is None:
                    raise PrefixHitLostError(
                        f"allocate({request_id!r}): page {position} of the {num_tokens}-token "
                        "prefix hit was evicted after lookup_prefix; call lookup_prefix and "
                        "allocate for a request back to back, or call lookup_prefix again."
                    )
                table.append(page)
            tables.append(table)
        return tables

    def _count_releasable(self, state: RequestPages, num_computed_tokens: int) -> int:
        """Pages that releasing invisible entries would return to the free pool."""
        ref_counts = self._pool.ref_counts
        page_size = self.page_size
        count = 0
        for group_index, kind, width in self._releasing:
            if kind == _SLIDING:
                visible = num_computed_tokens - width + 1
            else:
                visible = num_computed_tokens - num_computed_tokens % width
            table = state.page_tables[group_index]
            stop = min(visible // page_size, len(table)) if visible > 0 else 0
            for position in range(state.released_until[group_index], stop):
                page = table[position]
                if page and ref_counts[page] == 1:
                    count += 1
        return count

    def _release_invisible(self, state: RequestPages, num_computed_tokens: int) -> None:
        """Swap pages no query of this step or later can see for the null page."""
        pool = self._pool
        page_size = self.page_size
        released_until = state.released_until
        for group_index, kind, width in self._releasing:
            if kind == _SLIDING:
                visible = num_computed_tokens - width + 1
            else:
                visible = num_computed_tokens - num_computed_tokens % width
            start = released_until[group_index]
            stop = visible // page_size if visible > 0 else 0
            if stop <= start:
                continue
            table = state.page_tables[group_index]
            if stop > len(table):
                stop = len(table)
            for position in range(start, stop):
                page = table[position]
                if page:
                    table[position] = NULL_PAGE
                    pool.release(page)
            released_until[group_index] = stop
        state.next_release_at = self._next_release_at(released_until)

    def _next_release_at(self, released_until: list[int]) -> int:
        """The smallest num_computed_tokens at which some group can release its next page."""
        page_size = self.page_size
        soonest = _NEVER
        for group_index, kind, width in self._releasing:
            page_end = (released_until[group_index] + 1) * page_size
            if kind == _SLIDING:  # released once c - width + 1 >= page_end
                at = page_end + width - 1
            else:  # released once the chunk start c - c % width >= page_end
                at = -(-page_end // width) * width
            soonest = min(soonest, at)
        return soonest

    def _register_full_pages(self, state: RequestPages, token_ids: TokenIds, num_full: int) -> None:
        """Publish pages [num_registered_pages, num_full) of every group to the prefix cache."""
        hashes = self._extend_hashes(state, token_ids, num_full)
        pool = self._pool
        page_hashes = pool.page_hashes
        start = state.num_registered_pages
        for group_index, table in enumerate(state.page_tables):
            for position in range(start, num_full):
                page = table[position]
                if page and page_hashes[page] is None:
                    pool.register(page, group_index, hashes[position])
        state.num_registered_pages = num_full

    def _extend_hashes(
        self, state: RequestPages, token_ids: TokenIds, num_pages: int
    ) -> list[bytes]:
        """The request's chain hashes, computed up to page `num_pages` if not yet known."""
        hashes = state.page_hashes
        first = len(hashes)
        if first < num_pages:
            page_size = self.page_size
            # One encoding for all new pages, then cheap bytes slices per page.
            encoded = encode_token_ids(token_ids[first * page_size : num_pages * page_size])
            width = 4 * page_size
            parent = hashes[-1] if hashes else state.root_hash
            for offset in range(0, (num_pages - first) * width, width):
                parent = hash_bytes(parent + encoded[offset : offset + width])
                hashes.append(parent)
        return hashes

    # ------------------------------------------------------------------ freeing

    def free(self, request_id: RequestId, num_computed_tokens: int | None = None) -> None:
        """Return every page of a finished, aborted or preempted request; idempotent.

        Pages are released tail first (last position first, every group at that position),
        so when several free pages hold a shared prefix the shared head is evicted last.
        Cached pages keep their hash until an allocation reuses them.

        Args:
            request_id: The request; unknown ids are ignored.
            num_computed_tokens: Tokens whose K/V was really written, when that is fewer than
                the last allocation promised (the scheduler dropped a step it had allocated);
                pages past it leave the prefix cache. None: every allocated token was computed.
        """
        state = self._requests.pop(request_id, None)
        if state is None:
            return
        if not state.started:  # only looked up: it holds no pages
            return
        pool = self._pool
        tables = state.page_tables
        if num_computed_tokens is not None and self.enable_prefix_caching:
            ref_counts = pool.ref_counts
            page_hashes = pool.page_hashes
            first_invalid = num_computed_tokens // self.page_size
            for table in tables:
                for position in range(first_invalid, state.num_registered_pages):
                    page = table[position]
                    if (
                        page
                        and ref_counts[page] == 1
                        and page_hashes[page] == state.page_hashes[position]
                    ):
                        pool.forget(page)
        release = pool.release
        for position in range(len(tables[0]) - 1, -1, -1):
            for table in tables:
                page = table[position]
                if page:
                    release(page)

    def reset_prefix_cache(self) -> int:
        """Evict every free cached page (e.g. after a weight update); returns how many.

        Pages in use keep their hash; they leave the cache when they are reused.
        """
        return self._pool.evict_all_free()

    # ------------------------------------------------------------------ helpers

    def _new_request(
        self,
        request_id: RequestId,
        cache_salt: str | None,
        lora_id: int | str | None,
        register: bool = True,
    ) -> RequestPages:
        state = RequestPages(
            root_hash=root_page_hash(cache_salt, lora_id),
            cache_salt=cache_salt,
            lora_id=lora_id,
            page_tables=tuple([] for _ in self.groups),
            released_until=[0] * self._num_groups,
        )
        if register:
            self._requests[request_id] = state
        return state

    @staticmethod
    def _check_extra_keys(
        request_id: RequestId,
        state: RequestPages,
        cache_salt: str | None,
        lora_id: int | str | None,
    ) -> None:
        if (cache_salt is not None and cache_salt != state.cache_salt) or (
            lora_id is not None and lora_id != state.lora_id
        ):
            raise ValueError(
                f"request {request_id!r} was registered with cache_salt={state.cache_salt!r}, "
                f"lora_id={state.lora_id!r}; got cache_salt={cache_salt!r}, lora_id={lora_id!r}. "
                "Free the request before changing them."
            )

    def check_invariants(self) -> None:
        """Verify the whole bookkeeping from scratch (slow; for tests and debugging).

        Raises:
            AssertionError: naming the first broken invariant.
        """
        pool = self._pool
        num_pages = self.num_pages
        owners = [0] * num_pages
        for request_id, state in self._requests.items():
            tables = state.page_tables
            if not state.started:
                _require(
                    all(not table for table in tables),
                    f"request {request_id!r} holds pages before its first allocation",
                )
                continue
            _require(
                len({len(table) for table in tables}) == 1,
                f"request {request_id!r} has page tables of different lengths",
            )
            for group_index, table in enumerate(tables):
                for position, page in enumerate(table):
                    if position < state.released_until[group_index]:
                        _require(
                            page == NULL_PAGE,
                            f"request {request_id!r} group {group_index} keeps page {page} at "
                            f"released position {position}",
                        )
                    if page == NULL_PAGE:
                        continue
                    _require(0 < page < num_pages, f"page id {page} out of range")
                    _require(
                        pool.page_groups[page] == group_index,
                        f"page {page} serves group {pool.page_groups[page]} but sits in group "
                        f"{group_index}'s table of {request_id!r}",
                    )
                    owners[page] += 1
        free_cached = pool.free_cached_pages()
        free_empty = pool.free_empty_pages()
        free_cached_set = set(free_cached)
        free_empty_set = set(free_empty)
        _require(len(free_cached_set) == len(free_cached), "a page is twice in the LRU queue")
        _require(len(free_empty_set) == len(free_empty), "a page is twice in the empty stack")
        _require(not free_cached_set & free_empty_set, "a page is both cached-free and empty-free")
        _require(NULL_PAGE not in free_cached_set | free_empty_set, "the null page is free")
        _require(pool.ref_counts[NULL_PAGE] == 0, "the null page has a reference count")
        _require(pool.page_hashes[NULL_PAGE] is None, "the null page has a hash")
        used = 0
        for page in range(1, num_pages):
            count = pool.ref_counts[page]
            _require(
                count == owners[page],
                f"page {page} has reference count {count} but {owners[page]} owners",
            )
            is_free = page in free_cached_set or page in free_empty_set
            _require(
                is_free == (count == 0),
                f"page {page} with reference count {count} is {'' if is_free else 'not '}free",
            )
            if count:
                used += 1
            if count > 1:
                _require(
                    pool.page_hashes[page] is not None,
                    f"page {page} is shared by {count} entries without being in the cache",
                )
            if page in free_cached_set:
                _require(pool.page_hashes[page] is not None, f"cached-free page {page} has no hash")
            if page in free_empty_set:
                _require(pool.page_hashes[page] is None, f"empty-free page {page} has a hash")
        _require(
            used + len(free_cached) + len(free_empty) + 1 == num_pages,
            f"used {used} + free {len(free_cached) + len(free_empty)} + null 1 != {num_pages}",
        )
        _require(pool.num_free_pages == len(free_cached) + len(free_empty), "free count drifted")
        _require(
            len(free_cached) <= pool.max_cached_free_pages,
            f"{len(free_cached)} cached free pages exceed the capacity "
            f"{pool.max_cached_free_pages}",
        )
        indexed = 0
        for group_index, index in enumerate(pool.cached):
            for page_hash_, page in index.items():
                _require(
                    pool.page_hashes[page] == page_hash_ and pool.page_groups[page] == group_index,
                    f"cache index of group {group_index} points at page {page} with another "
                    "hash or group",
                )
            indexed += len(index)
        hashed = sum(1 for page_hash_ in pool.page_hashes if page_hash_ is not None)
        _require(indexed == hashed, f"{hashed} pages carry a hash but {indexed} are indexed")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"KV cache invariant broken: {message}")
