"""Sliding-window, chunked and hybrid groups: early release and consistent prefix hits."""

from __future__ import annotations

from esurge_core.kv_cache import NULL_PAGE
from esurge_core.kv_cache.page_hashing import page_hash_chain, root_page_hash

from .helpers import FULL, chunked, held, manager, prefill, sliding


def decode(m, request_id: str, tokens: list[int], until: int) -> None:
    """Append and allocate one token at a time until the request has `until` tokens."""
    while len(tokens) < until:
        tokens.append(len(tokens) % 97)
        assert m.allocate(request_id, tokens, len(tokens) - 1, 1)


def test_long_request_holds_at_most_33_pages_in_a_512_window_group_of_16_token_pages():
    m = manager(num_pages=400, page_size=16, groups=(FULL, sliding(512)))
    tokens = [7] * 512
    prefill(m, "r", tokens)
    most = 0
    while len(tokens) < 4096:
        tokens.append(len(tokens) % 97)
        assert m.allocate("r", tokens, len(tokens) - 1, 1)
        most = max(most, len(held(m, "r", group=1)))
    assert most == 33
    assert len(held(m, "r", group=0)) == 256
    m.check_invariants()


def test_released_window_pages_become_null_entries_in_place():
    m = manager(page_size=4, groups=(sliding(4, (0,)),))
    tokens = list(range(12))
    prefill(m, "r", tokens)
    decode(m, "r", tokens, 13)
    table = m.page_ids("r")[0]
    assert len(table) == 4  # positional: entry i still covers positions [4i, 4i + 4)
    assert table[:2] == [NULL_PAGE, NULL_PAGE]
    assert NULL_PAGE not in table[2:]


def test_pages_still_inside_the_window_are_kept():
    m = manager(page_size=4, groups=(sliding(6, (0,)),))
    tokens = list(range(9))
    prefill(m, "r", tokens)
    decode(m, "r", tokens, 10)
    # The query at position 9 sees positions 4..9: pages 1 and 2, page 0 is released.
    assert m.page_ids("r")[0][0] == NULL_PAGE
    assert all(m.page_ids("r")[0][1:])


def test_released_pages_return_to_the_pool():
    m = manager(num_pages=20, page_size=4, groups=(sliding(4, (0,)),))
    tokens = list(range(16))
    prefill(m, "r", tokens)
    free_after_prefill = m.num_free_pages
    decode(m, "r", tokens, 17)
    assert m.num_free_pages == free_after_prefill - 1 + 3


def test_chunked_group_releases_pages_before_the_current_chunk():
    m = manager(page_size=4, groups=(chunked(8, (0,)),))
    tokens = list(range(16))
    prefill(m, "r", tokens)
    decode(m, "r", tokens, 17)  # query at position 16 starts chunk [16, 24)
    assert m.page_ids("r")[0][:4] == [NULL_PAGE] * 4
    assert held(m, "r") == m.page_ids("r")[0][4:]


def test_chunked_group_keeps_the_current_chunk():
    m = manager(page_size=4, groups=(chunked(8, (0,)),))
    tokens = list(range(14))
    prefill(m, "r", tokens)
    decode(m, "r", tokens, 15)  # query at 14 sees 8..14: pages 2 and 3
    assert m.page_ids("r")[0][:2] == [NULL_PAGE, NULL_PAGE]
    assert all(m.page_ids("r")[0][2:])


def test_release_makes_room_for_an_allocation_that_would_not_fit_otherwise():
    m = manager(num_pages=5, page_size=2, groups=(sliding(2, (0,)),))
    tokens = list(range(8))
    prefill(m, "r", tokens)  # holds all 4 usable pages
    assert m.num_free_pages == 0
    tokens.append(1)
    assert m.allocate("r", tokens, 8, 1)
    m.check_invariants()


def test_hybrid_groups_have_one_table_each_drawn_from_one_pool():
    m = manager(num_pages=32, page_size=4, groups=(FULL, sliding(8)))
    prefill(m, "r", list(range(12)))
    full, local = m.page_ids("r")
    assert len(full) == len(local) == 3
    assert not set(full) & set(local)
    assert m.num_free_pages == 31 - 6


def test_sliding_window_hit_needs_only_the_pages_inside_the_window():
    m = manager(num_pages=64, page_size=4, groups=(sliding(8, (0,)),))
    tokens = list(range(24))
    prefill(m, "a", tokens)
    decode(m, "a", tokens, 30)  # pages 0..3 are released (and stay cached)
    m.free("a")
    hit = prefill(m, "b", tokens[:25])
    assert hit == 24
    # The query at 24 sees 17..24: pages 4 and 5 are taken from the cache, 0..3 stay null.
    assert m.page_ids("b")[0][:4] == [NULL_PAGE] * 4
    m.check_invariants()


def uncache(m, group: int, tokens: list[int], page_index: int) -> None:
    """Evict one free cached page of `tokens` from one group's index, as an allocation would."""
    chain = page_hash_chain(tokens, m.page_size, page_index + 1, root_page_hash())
    pool = m._pool
    page = pool.cached[group][chain[page_index]]
    assert pool.ref_counts[page] == 0
    pool._lru.remove(page)
    del pool.cached[group][chain[page_index]]
    pool.page_hashes[page] = None
    pool._empty.append(page)


def test_sliding_window_hit_survives_eviction_of_pages_outside_the_window():
    m = manager(num_pages=64, page_size=4, groups=(sliding(8, (0,)),))
    tokens = list(range(25))
    prefill(m, "a", tokens[:24])
    m.free("a")
    uncache(m, 0, tokens, 0)  # a full-attention group would lose the whole hit
    assert m.lookup_prefix("b", tokens) == 24
    assert m.allocate("b", tokens, 24, 1)
    m.check_invariants()


def test_hybrid_hit_is_the_largest_length_valid_for_every_group():
    m = manager(num_pages=64, page_size=4, groups=(FULL, sliding(8)))
    tokens = list(range(25))
    prefill(m, "a", tokens[:24])
    m.free("a")
    uncache(m, 1, tokens, 5)  # page 5 (positions 20..23) of the sliding group only
    # Full group alone would give 24; the sliding group needs page 5 for a hit at 24, and
    # pages 3 and 4 (positions 13..19) for a hit at 20: so 20.
    assert m.lookup_prefix("b", tokens) == 20
    assert m.allocate("b", tokens, 20, 5)
    m.check_invariants()


def test_full_group_miss_bounds_the_hybrid_hit():
    m = manager(num_pages=64, page_size=4, groups=(FULL, sliding(8)))
    tokens = list(range(25))
    prefill(m, "a", tokens[:24])
    m.free("a")
    uncache(m, 0, tokens, 2)
    assert m.lookup_prefix("b", tokens) == 8
