"""Allocation: positional page tables, growth, all-or-nothing, freeing."""

from __future__ import annotations

import numpy as np
import pytest

from esurge_core.errors import ConfigError
from esurge_core.kv_cache import NULL_PAGE, KVCacheManager

from .helpers import FULL, held, manager, sliding


def test_allocation_covers_every_position_up_to_the_new_tokens():
    m = manager(page_size=4)
    assert m.allocate("r", list(range(10)), 0, 10)
    assert len(m.page_ids("r")[0]) == 3
    m.check_invariants()


def test_decoding_takes_a_new_page_only_when_the_last_one_is_full():
    m = manager(page_size=4)
    tokens = list(range(4))
    m.allocate("r", tokens, 0, 4)
    tokens.append(9)
    before = m.num_free_pages
    assert m.allocate("r", tokens, 4, 1)
    assert m.num_free_pages == before - 1
    tokens.append(9)
    assert m.allocate("r", tokens, 5, 1)
    assert m.num_free_pages == before - 1


def test_page_table_entry_i_covers_positions_i_times_page_size():
    m = manager(page_size=4)
    tokens = list(range(6))
    m.allocate("r", tokens, 0, 2)
    first = m.page_ids("r")[0][0]
    m.allocate("r", tokens, 2, 4)
    assert m.page_ids("r")[0][0] == first
    assert len(m.page_ids("r")[0]) == 2


def test_allocation_that_does_not_fit_changes_nothing():
    m = manager(num_pages=5, page_size=4)
    m.allocate("a", list(range(8)), 0, 8)
    stats = m.stats()
    assert not m.allocate("b", list(range(100, 112)), 0, 12)
    assert m.stats() == stats
    assert "b" not in m
    m.check_invariants()


def test_allocation_is_all_or_nothing_across_groups():
    m = manager(num_pages=6, page_size=4, groups=(FULL, sliding(8)))
    tokens = list(range(12))
    assert not m.allocate("r", tokens, 0, 12)  # 3 pages x 2 groups > 5 free
    assert m.num_free_pages == 5
    assert m.allocate("r", tokens, 0, 8)
    assert m.num_free_pages == 1
    m.check_invariants()


def test_failed_growth_keeps_the_existing_pages():
    m = manager(num_pages=3, page_size=2)
    tokens = list(range(6))
    m.allocate("r", tokens, 0, 4)
    pages = list(m.page_ids("r")[0])
    assert not m.allocate("r", tokens, 4, 2)
    assert m.page_ids("r")[0] == pages
    m.check_invariants()


def test_free_returns_every_page():
    m = manager(num_pages=8, page_size=4)
    m.allocate("r", list(range(20)), 0, 20)
    m.free("r")
    assert m.num_free_pages == 7
    assert "r" not in m
    m.check_invariants()


def test_free_of_an_unknown_request_is_a_no_op():
    m = manager()
    m.free("never-seen")
    m.check_invariants()


def test_free_releases_the_tail_first():
    m = manager(num_pages=8, page_size=2)
    m.allocate("r", list(range(6)), 0, 6)
    pages = m.page_ids("r")[0]
    first, second, third = pages
    m.free("r")
    # The last page heads the eviction queue; the first page of the prefix is evicted last.
    assert m._pool.free_cached_pages() == [third, second, first]


def test_fill_page_table_writes_the_row_and_zeroes_the_rest():
    m = manager(page_size=4)
    m.allocate("r", list(range(8)), 0, 8)
    table = np.full((2, 5), 7, dtype=np.int32)
    m.fill_page_table("r", [table], row=1)
    assert table[1].tolist() == [*m.page_ids("r")[0], 0, 0, 0]
    assert table[0].tolist() == [7] * 5


def test_fill_page_table_refuses_a_table_too_narrow():
    m = manager(page_size=4)
    m.allocate("r", list(range(12)), 0, 12)
    with pytest.raises(ValueError, match="holds only 2"):
        m.fill_page_table("r", [np.zeros((1, 2), np.int32)], row=0)


def test_page_ids_of_an_unknown_request_raise_a_clear_key_error():
    with pytest.raises(KeyError, match="holds no KV-cache pages"):
        manager().page_ids("ghost")


def test_allocating_past_the_known_tokens_is_refused():
    with pytest.raises(ValueError, match="token ids"):
        manager().allocate("r", [1, 2, 3], 0, 4)


def test_num_computed_tokens_going_back_is_refused():
    m = manager(page_size=4)
    m.allocate("r", list(range(8)), 0, 8)
    m.allocate("r", list(range(9)), 8, 1)
    with pytest.raises(ValueError, match="went back"):
        m.allocate("r", list(range(9)), 4, 1)


def test_capacity_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="prefix_cache_capacity"):
        KVCacheManager([FULL], num_pages=8, page_size=4, prefix_cache_capacity=1.5)


def test_null_page_is_never_in_a_page_table():
    m = manager(num_pages=9, page_size=1)
    m.allocate("r", list(range(8)), 0, 8)
    assert NULL_PAGE not in m.page_ids("r")[0]
    assert held(m, "r") == m.page_ids("r")[0]
