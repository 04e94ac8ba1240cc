"""The page pool: reference counts, free pages, and the prefix-cache index over page hashes.

A page is in exactly one of four states:

* the null page 0: never allocated, never freed; released page-table entries point at it;
* in use: `ref_counts[page] > 0` (shared through the prefix cache when > 1);
* free and cached: reference count 0, still holding its hash, in the LRU `FreePageQueue`;
  a prefix hit revives it, an allocation or the cache capacity evicts it (head first);
* free and empty: reference count 0, no hash, on a plain stack, reused before any cached page.

Keeping empty pages apart from cached ones means an allocation never evicts a cached prefix
while an empty page is left, and the capacity bound can evict the oldest cached page in O(1).
"""

from __future__ import annotations

from esurge_core.kv_cache.free_page_queue import FreePageQueue

NULL_PAGE = 0


class PagePool:
    """Owns every page id; the manager asks it for pages and gives them back.

    Args:
        num_pages: Total pages, the null page 0 included (so num_pages - 1 are usable).
        num_groups: Number of KV-cache groups; each has its own hash index, because the same
            tokens give different K/V in different layers.
        max_cached_free_pages: Most free pages that may keep their hash (the prefix-cache
            capacity); beyond it the least recently freed cached page is evicted.
    """

    __slots__ = (
        "_empty",
        "_lru",
        "cached",
        "max_cached_free_pages",
        "num_evictions",
        "num_pages",
        "page_groups",
        "page_hashes",
        "ref_counts",
    )

    def __init__(self, num_pages: int, num_groups: int, max_cached_free_pages: int) -> None:
        if num_pages < 2:
            raise ValueError(
                f"a page pool needs at least 2 pages (the null page and one usable); got {num_pages}."
            )
        self.num_pages = num_pages
        #: Reference count of each page: the number of page-table entries pointing at it.
        self.ref_counts = [0] * num_pages
        #: Hash of each page while it is in the prefix cache, else None.
        self.page_hashes: list[bytes | None] = [None] * num_pages
        #: Group whose layers the page currently serves (-1: never allocated).
        self.page_groups = [-1] * num_pages
        #: Per group: page hash -> the page that holds it.
        self.cached: tuple[dict[bytes, int], ...] = tuple({} for _ in range(num_groups))
        self.max_cached_free_pages = max_cached_free_pages
        #: Pages that lost their hash (reused, over capacity, or reset), ever.
        self.num_evictions = 0
        # Empty free pages as a stack; popped from the end, so page 1 goes out first.
        self._empty = list(range(num_pages - 1, NULL_PAGE, -1))
        self._lru = FreePageQueue(num_pages)

    @property
    def num_free_pages(self) -> int:
        """Pages an allocation can take now (empty ones and evictable cached ones)."""
        return len(self._empty) + len(self._lru)

    @property
    def num_cached_free_pages(self) -> int:
        """Free pages that still hold a cached prefix."""
        return len(self._lru)

    def free_cached_pages(self) -> list[int]:
        """Free cached pages in eviction order (head first); for inspection and tests."""
        return list(self._lru)

    def free_empty_pages(self) -> list[int]:
        """Free pages without a hash; for inspection and tests."""
        return list(self._empty)

    def take(self, count: int, group: int) -> list[int]:
        """Allocate `count` pages for `group` with reference count 1.

        Empty pages go first; then the least recently freed cached pages lose their hash.
        The caller has checked `count <= num_free_pages`.
        """
        empty = self._empty
        ref_counts = self.ref_counts
        groups = self.page_groups
        pages: list[int] = []
        for _ in range(count):
            page = empty.pop() if empty else self._evict_head()
            ref_counts[page] = 1
            groups[page] = group
            pages.append(page)
        return pages

    def acquire(self, page: int) -> None:
        """Add a reference to a cached page (a prefix hit), reviving it if it was free."""
        if self.ref_counts[page] == 0:
            self._lru.remove(page)
        self.ref_counts[page] += 1

    def release(self, page: int) -> None:
        """Drop one reference; at zero the page becomes free (cached pages keep their hash)."""
        count = self.ref_counts[page] - 1
        self.ref_counts[page] = count
        if count:
            return
        if self.page_hashes[page] is None:
            self._empty.append(page)
            return
        lru = self._lru
        lru.append(page)
        if len(lru) > self.max_cached_free_pages:
            self._empty.append(self._evict_head())

    def register(self, page: int, group: int, page_hash: bytes) -> bool:
        """Publish an in-use page under its content hash; False if the hash is already held.

        When two requests compute the same page without sharing it, only the first is
        indexed; the other stays private and becomes an empty page when freed.
        """
        index = self.cached[group]
        if page_hash in index:
            return False
        index[page_hash] = page
        self.page_hashes[page] = page_hash
        return True

    def forget(self, page: int) -> None:
        """Take an in-use page out of the prefix cache (its contents will not be valid)."""
        page_hash = self.page_hashes[page]
        if page_hash is not None:
            del self.cached[self.page_groups[page]][page_hash]
            self.page_hashes[page] = None

    def evict_all_free(self) -> int:
        """Drop the hash of every free cached page (a prefix-cache reset); returns how many."""
        count = 0
        while len(self._lru):
            self._empty.append(self._evict_head())
            count += 1
        return count

    def _evict_head(self) -> int:
        page = self._lru.popleft()
        page_hash = self.page_hashes[page]
        assert page_hash is not None  # only hashed pages enter the LRU queue
        del self.cached[self.page_groups[page]][page_hash]
        self.page_hashes[page] = None
        self.num_evictions += 1
        return page
