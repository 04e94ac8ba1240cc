"""The metrics snapshot."""

from __future__ import annotations

import dataclasses

import pytest

from .helpers import manager, prefill


def test_fresh_manager_reports_every_page_free():
    stats = manager(num_pages=9).stats()
    assert (stats.num_pages, stats.num_used_pages, stats.num_free_pages) == (8, 0, 8)
    assert stats.usage == 0.0
    assert stats.prefix_cache_hit_rate == 0.0


def test_stats_count_used_and_cached_pages():
    m = manager(num_pages=9, page_size=4)
    prefill(m, "a", list(range(10)))
    stats = m.stats()
    assert stats.num_used_pages == 3
    assert stats.num_free_pages == 5
    assert stats.num_cached_pages == 2
    assert stats.usage == pytest.approx(3 / 8)
    assert stats.num_requests == 1


def test_stats_snapshot_is_frozen_and_slotted():
    stats = manager().stats()
    assert not hasattr(stats, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.num_pages = 3  # type: ignore[misc]


def test_evictions_are_counted():
    m = manager(num_pages=4, page_size=2)  # 3 usable pages
    prefill(m, "a", [1, 2, 3, 4, 5])  # 2 full cached pages + 1 partial
    m.free("a")
    prefill(m, "b", [6, 7, 8, 9, 10])
    assert m.stats().num_evictions == 2
