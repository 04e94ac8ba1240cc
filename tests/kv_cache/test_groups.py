"""KVCacheGroupSpec (contract C): validation and which keys a query can see."""

from __future__ import annotations

import pytest

from esurge_core.errors import ConfigError
from esurge_core.kv_cache import KVCacheGroupSpec, validate_groups


def test_sliding_window_group_needs_a_window():
    with pytest.raises(ConfigError, match="sliding_window >= 1"):
        KVCacheGroupSpec("sliding_window", (0,))


def test_chunked_group_needs_a_chunk_size():
    with pytest.raises(ConfigError, match="chunk_size >= 1"):
        KVCacheGroupSpec("chunked", (0,), chunk_size=0)


def test_full_group_refuses_a_window():
    with pytest.raises(ConfigError, match="only valid with pattern 'sliding_window'"):
        KVCacheGroupSpec("full", (0,), sliding_window=8)


def test_unknown_pattern_is_refused_with_the_allowed_ones():
    with pytest.raises(ConfigError, match="unknown"):
        KVCacheGroupSpec("local", (0,))  # type: ignore[arg-type]


def test_group_needs_layers():
    with pytest.raises(ConfigError, match="at least one layer"):
        KVCacheGroupSpec("full", ())


def test_a_layer_in_two_groups_is_refused():
    with pytest.raises(ConfigError, match="layer 1 is in KV-cache groups 0 and 1"):
        validate_groups([KVCacheGroupSpec("full", (0, 1)), KVCacheGroupSpec("full", (1,))])


def test_no_groups_is_refused():
    with pytest.raises(ConfigError, match="at least one KV-cache group"):
        validate_groups([])


def test_sliding_window_query_sees_the_last_window_positions():
    group = KVCacheGroupSpec("sliding_window", (0,), sliding_window=4)
    assert group.first_visible_position(10) == 7
    assert group.first_visible_position(2) == 0


def test_chunked_query_sees_its_chunk_from_the_start():
    group = KVCacheGroupSpec("chunked", (0,), chunk_size=8)
    assert group.first_visible_position(13) == 8
    assert group.first_visible_position(16) == 16


def test_decoding_sliding_window_bound_is_ceil_window_minus_one_over_page_plus_one():
    group = KVCacheGroupSpec("sliding_window", (0,), sliding_window=512)
    assert group.max_pages_per_request(4096, page_size=16, max_step_tokens=1) == 33


def test_full_group_needs_a_page_per_page_size_tokens():
    assert KVCacheGroupSpec("full", (0,)).max_pages_per_request(100, page_size=16) == 7
