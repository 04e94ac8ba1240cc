"""The page pool and its LRU free queue: null page, refcounts, O(1) removal, eviction order."""

from __future__ import annotations

import pytest

from esurge_core.kv_cache.free_page_queue import FreePageQueue
from esurge_core.kv_cache.page_pool import NULL_PAGE, PagePool


def test_free_queue_pops_in_the_order_pages_were_appended():
    queue = FreePageQueue(8)
    for page in (5, 2, 7):
        queue.append(page)
    assert [queue.popleft() for _ in range(3)] == [5, 2, 7]


def test_free_queue_removes_a_page_from_the_middle():
    queue = FreePageQueue(8)
    for page in (1, 2, 3, 4):
        queue.append(page)
    queue.remove(3)
    assert list(queue) == [1, 2, 4]
    assert len(queue) == 3


def test_free_queue_pop_from_empty_raises():
    with pytest.raises(IndexError):
        FreePageQueue(4).popleft()


def test_pool_never_hands_out_the_null_page():
    pool = PagePool(num_pages=5, num_groups=1, max_cached_free_pages=4)
    pages = pool.take(4, group=0)
    assert NULL_PAGE not in pages
    assert sorted(pages) == [1, 2, 3, 4]
    assert pool.num_free_pages == 0


def test_pool_rejects_a_pool_without_usable_pages():
    with pytest.raises(ValueError, match="at least 2 pages"):
        PagePool(num_pages=1, num_groups=1, max_cached_free_pages=0)


def test_shared_page_is_free_only_after_its_last_reference_goes():
    pool = PagePool(num_pages=4, num_groups=1, max_cached_free_pages=3)
    (page,) = pool.take(1, group=0)
    pool.register(page, 0, b"h" * 16)
    pool.acquire(page)
    pool.release(page)
    assert pool.ref_counts[page] == 1
    assert pool.num_free_pages == 2
    pool.release(page)
    assert pool.num_free_pages == 3


def test_empty_pages_are_reused_before_cached_pages_are_evicted():
    pool = PagePool(num_pages=4, num_groups=1, max_cached_free_pages=3)
    cached, empty = pool.take(2, group=0)
    pool.register(cached, 0, b"c" * 16)
    pool.release(cached)
    pool.release(empty)
    assert pool.take(1, group=0) == [empty]
    assert pool.page_hashes[cached] == b"c" * 16


def test_reusing_a_cached_page_evicts_its_hash():
    pool = PagePool(num_pages=2, num_groups=1, max_cached_free_pages=1)
    (page,) = pool.take(1, group=0)
    pool.register(page, 0, b"x" * 16)
    pool.release(page)
    assert pool.take(1, group=0) == [page]
    assert pool.page_hashes[page] is None
    assert pool.cached[0] == {}
    assert pool.num_evictions == 1


def test_a_hit_revives_a_free_cached_page_from_the_middle_of_the_queue():
    pool = PagePool(num_pages=5, num_groups=1, max_cached_free_pages=4)
    pages = pool.take(3, group=0)
    for index, page in enumerate(pages):
        pool.register(page, 0, bytes([index]) * 16)
    for page in pages:
        pool.release(page)
    pool.acquire(pages[1])
    assert pool.free_cached_pages() == [pages[0], pages[2]]
    assert pool.ref_counts[pages[1]] == 1


def test_second_page_with_an_already_cached_hash_stays_private():
    pool = PagePool(num_pages=4, num_groups=1, max_cached_free_pages=3)
    first, second = pool.take(2, group=0)
    assert pool.register(first, 0, b"s" * 16)
    assert not pool.register(second, 0, b"s" * 16)
    assert pool.page_hashes[second] is None


def test_the_same_hash_is_indexed_separately_per_group():
    pool = PagePool(num_pages=4, num_groups=2, max_cached_free_pages=3)
    (a,) = pool.take(1, group=0)
    (b,) = pool.take(1, group=1)
    assert pool.register(a, 0, b"s" * 16)
    assert pool.register(b, 1, b"s" * 16)
    assert pool.cached[0][b"s" * 16] == a
    assert pool.cached[1][b"s" * 16] == b
