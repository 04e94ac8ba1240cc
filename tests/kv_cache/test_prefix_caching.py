"""Prefix caching on full pages: hits, sharing, the last token, tenants, capacity."""

from __future__ import annotations

import pytest

from esurge_core.kv_cache import PrefixHitLostError

from .helpers import manager, prefill


def test_second_request_with_the_same_prefix_hits_its_full_pages():
    m = manager(page_size=4)
    prefill(m, "a", list(range(10)))
    assert m.lookup_prefix("b", [*range(8), 99, 98]) == 8


def test_requests_sharing_a_prefix_share_pages_with_refcounts():
    m = manager(page_size=4)
    prefill(m, "a", list(range(10)))
    prefill(m, "b", [*range(8), 50, 51, 52])
    assert m.page_ids("a")[0][:2] == m.page_ids("b")[0][:2]
    assert m.page_ids("a")[0][2] != m.page_ids("b")[0][2]
    for page in m.page_ids("a")[0][:2]:
        assert m._pool.ref_counts[page] == 2
    m.check_invariants()


def test_freed_pages_keep_their_hash_and_still_hit():
    m = manager(page_size=4)
    prefill(m, "a", list(range(12)))
    m.free("a")
    assert m.lookup_prefix("b", list(range(13))) == 12


def test_hit_never_covers_the_last_prompt_token():
    m = manager(page_size=4)
    prefill(m, "a", list(range(12)))
    assert m.lookup_prefix("b", list(range(12))) == 8


def test_hit_is_page_aligned_and_ignores_a_partial_page():
    m = manager(page_size=4)
    prefill(m, "a", list(range(10)))
    assert m.lookup_prefix("b", list(range(11))) == 8


def test_the_same_prompt_under_two_cache_salts_shares_no_page():
    m = manager(page_size=4)
    prompt = list(range(16))
    prefill(m, "tenant-a", prompt, cache_salt="key-a")
    assert prefill(m, "tenant-b", prompt, cache_salt="key-b") == 0
    assert not set(m.page_ids("tenant-a")[0]) & set(m.page_ids("tenant-b")[0])


def test_the_same_salt_shares_pages():
    m = manager(page_size=4)
    prefill(m, "a", list(range(16)), cache_salt="key")
    assert prefill(m, "b", list(range(16)), cache_salt="key") == 12


def test_different_adapters_share_no_page():
    m = manager(page_size=4)
    prefill(m, "a", list(range(16)), lora_id=1)
    assert m.lookup_prefix("b", list(range(16)), lora_id=2) == 0


def test_generated_tokens_become_cacheable_once_their_page_is_full():
    m = manager(page_size=4)
    tokens = list(range(6))
    prefill(m, "a", tokens)
    tokens += [40, 41]
    assert m.allocate("a", tokens, 6, 1)
    assert m.allocate("a", tokens, 7, 1)
    assert m.lookup_prefix("b", [*tokens, 0]) == 8


def test_a_page_holding_a_token_not_yet_sampled_is_published_once_it_is_known():
    # Asynchronous scheduling computes position 7 while the step sampling its token runs:
    # the page of positions 4-7 must not be hashed with the placeholder.
    m = manager(page_size=4)
    tokens = list(range(6))
    prefill(m, "a", tokens)
    tokens += [40, -1]
    assert m.allocate("a", tokens, 6, 1)
    assert m.allocate("a", tokens, 7, 1, num_known_tokens=7)
    assert m.lookup_prefix("b", [*tokens[:7], 41, 0]) == 4
    tokens[7] = 41
    tokens.append(-1)
    assert m.allocate("a", tokens, 8, 1, num_known_tokens=8)
    assert m.lookup_prefix("c", [*tokens[:8], 0]) == 8


def test_preempted_request_hits_its_own_pages_on_readmission():
    m = manager(page_size=4)
    tokens = list(range(13))
    prefill(m, "a", tokens)
    m.free("a")
    assert m.lookup_prefix("a", tokens) == 12


def test_lookup_counts_queries_and_hits_in_tokens():
    m = manager(page_size=4)
    prefill(m, "a", list(range(10)))
    prefill(m, "b", list(range(10)))
    stats = m.stats()
    assert stats.prefix_cache_queries == 20
    assert stats.prefix_cache_hits == 8
    assert stats.prefix_cache_hit_rate == pytest.approx(0.4)


def test_repeated_lookup_of_a_waiting_request_is_counted_once():
    m = manager(page_size=4)
    prefill(m, "a", list(range(10)))
    m.lookup_prefix("b", list(range(10)))
    m.lookup_prefix("b", list(range(10)))
    assert m.stats().prefix_cache_queries == 20
    assert m.stats().prefix_cache_hits == 8


def test_first_allocation_must_use_the_hit_or_nothing():
    m = manager(page_size=4)
    prefill(m, "a", list(range(10)))
    m.lookup_prefix("b", list(range(10)))
    with pytest.raises(ValueError, match="prefix hit 8"):
        m.allocate("b", list(range(10)), 4, 6)


def test_declining_a_hit_computes_from_scratch_on_fresh_pages():
    m = manager(page_size=4)
    prefill(m, "a", list(range(10)))
    m.lookup_prefix("b", list(range(10)))
    assert m.allocate("b", list(range(10)), 0, 10)
    assert not set(m.page_ids("a")[0]) & set(m.page_ids("b")[0])
    assert m.stats().prefix_cache_hits == 0
    m.check_invariants()


def test_hit_evicted_between_lookup_and_allocate_is_reported():
    m = manager(num_pages=4, page_size=2)
    prefill(m, "a", [1, 2, 3, 4, 5, 6])
    m.free("a")
    assert m.lookup_prefix("b", [1, 2, 3, 4, 5, 6]) == 4
    assert m.allocate("c", [9, 9, 9, 9, 9, 9], 0, 6)  # takes every page, evicting the hit
    with pytest.raises(PrefixHitLostError, match="evicted after lookup_prefix"):
        m.allocate("b", [1, 2, 3, 4, 5, 6], 4, 2)


def test_lookup_of_a_request_holding_pages_is_refused():
    m = manager(page_size=4)
    prefill(m, "a", list(range(10)))
    with pytest.raises(ValueError, match="already holds pages"):
        m.lookup_prefix("a", list(range(10)))


def test_changing_the_salt_of_a_known_request_is_refused():
    m = manager(page_size=4)
    m.lookup_prefix("a", list(range(10)), cache_salt="x")
    with pytest.raises(ValueError, match="cache_salt='x'"):
        m.allocate("a", list(range(10)), 0, 10, cache_salt="y")


def test_prefix_caching_disabled_never_hits_and_keeps_no_hash():
    m = manager(page_size=4, enable_prefix_caching=False)
    prefill(m, "a", list(range(10)))
    assert m.lookup_prefix("b", list(range(10))) == 0
    assert m.stats().num_cached_pages == 0


def test_capacity_bounds_the_unreferenced_cached_pages():
    m = manager(num_pages=11, page_size=2, prefix_cache_capacity=0.3)  # 3 of 10 pages
    prefill(m, "a", list(range(12)))
    m.free("a")
    stats = m.stats()
    assert stats.num_cached_free_pages == 3
    assert stats.num_evictions == 3
    m.check_invariants()


def test_capacity_evicts_the_tail_and_keeps_the_prefix_head():
    m = manager(num_pages=11, page_size=2, prefix_cache_capacity=0.2)
    prefill(m, "a", list(range(12)))
    m.free("a")
    assert m.lookup_prefix("b", list(range(12))) == 4


def test_zero_capacity_still_shares_pages_between_running_requests():
    m = manager(page_size=4, prefix_cache_capacity=0.0)
    prefill(m, "a", list(range(10)))
    assert prefill(m, "b", list(range(10))) == 8
    m.free("a")
    m.free("b")
    assert m.stats().num_cached_pages == 0


def test_allocation_evicts_cached_pages_least_recently_freed_first():
    m = manager(num_pages=5, page_size=2)
    prefill(m, "old", [1, 2, 3])
    m.free("old")
    prefill(m, "new", [5, 6, 7])
    m.free("new")
    # 4 usable pages: 2 empty, then the cached pages of "old" and "new", in that order.
    assert m.allocate("x", [0] * 6, 0, 6)
    assert m.lookup_prefix("q1", [5, 6, 7]) == 2
    assert m.lookup_prefix("q2", [1, 2, 3]) == 0


def test_free_with_fewer_computed_tokens_uncaches_pages_never_written():
    m = manager(page_size=4)
    tokens = list(range(12))
    assert m.allocate("a", tokens, 0, 12)
    m.free("a", num_computed_tokens=4)
    assert m.lookup_prefix("b", [*tokens, 1]) == 4
    m.check_invariants()


def test_reset_prefix_cache_evicts_every_free_cached_page():
    m = manager(page_size=4)
    prefill(m, "a", list(range(12)))
    m.free("a")
    assert m.reset_prefix_cache() == 3
    assert m.lookup_prefix("b", list(range(13))) == 0
