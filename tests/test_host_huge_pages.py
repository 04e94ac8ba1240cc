"""``esurge_core.host_huge_pages``: the memory under host arrays moved into transparent huge
pages, contents unchanged, and nothing moved (or failed) where the system cannot."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from esurge_core import host_huge_pages
from esurge_core.host_huge_pages import _merged, back_with_huge_pages, huge_page_size

MB = 1 << 20


def _anon_huge_bytes_at(address: int) -> int:
    """AnonHugePages of the mapping of this process that holds ``address`` (Linux)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                start, end = (int(part, 16) for part in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "AnonHugePages:":
                return int(fields[1]) * 1024
    return 0


def test_ranges_closer_than_the_gap_are_joined_and_sorted():
    ranges = [(50, 60), (0, 10), (12, 20), (100, 110)]
    assert _merged(ranges, gap=5) == [(0, 20), (50, 60), (100, 110)]
    assert _merged(ranges, gap=1) == [(0, 10), (12, 20), (50, 60), (100, 110)]
    assert _merged([(0, 30), (10, 20)], gap=1) == [(0, 30)]
    assert _merged([], gap=1) == []


def test_weights_keep_their_values_and_move_where_the_system_can():
    size = huge_page_size()
    values = np.arange(6 * MB // 4, dtype=np.float32)
    array = jnp.asarray(values)
    other = jnp.ones((3, 5), jnp.bfloat16)  # small, and maybe far away: left as it is
    moved = back_with_huge_pages([array, other, jnp.zeros((0,), jnp.float32)])
    np.testing.assert_array_equal(np.asarray(array), values)
    np.testing.assert_array_equal(np.asarray(other), np.ones((3, 5)))
    if size is None:
        assert moved == 0
        return
    assert moved % size == 0
    assert moved <= array.nbytes + other.nbytes + size
    if moved == 0:
        pytest.skip("this system moved nothing into huge pages (no MADV_COLLAPSE or free pages)")
    # The buffer's whole huge pages are now a mapping of their own (the advice splits the
    # heap's), which shows them as huge pages.
    assert moved >= size
    first_whole_page = -(-array.unsafe_buffer_pointer() // size) * size
    assert _anon_huge_bytes_at(first_whole_page) >= moved


def test_nothing_moves_without_transparent_huge_pages(monkeypatch):
    monkeypatch.setattr(host_huge_pages, "huge_page_size", lambda: None)
    assert back_with_huge_pages([jnp.ones(4 * MB, jnp.uint8)]) == 0


def test_arrays_that_are_not_one_cpu_buffer_are_skipped():
    assert host_huge_pages._host_ranges([np.ones(8), "not an array"]) == []
    array = jnp.ones(16, jnp.float32)
    [(start, end)] = host_huge_pages._host_ranges([array])
    assert end - start == array.nbytes
    deleted = jnp.ones(16, jnp.float32)
    deleted.delete()
    assert host_huge_pages._host_ranges([deleted]) == []
