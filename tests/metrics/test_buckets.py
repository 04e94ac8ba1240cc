"""Histogram bucket builders."""

from __future__ import annotations

import pytest

from esurge_core.metrics.buckets import one_two_five_buckets, power_of_two_buckets


def test_one_two_five_buckets_end_at_the_maximum():
    assert one_two_five_buckets(256) == (1, 2, 5, 10, 20, 50, 100, 200, 256)
    assert one_two_five_buckets(200) == (1, 2, 5, 10, 20, 50, 100, 200)


def test_power_of_two_buckets_end_at_the_maximum():
    assert power_of_two_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert power_of_two_buckets(1) == (1,)


@pytest.mark.parametrize("builder", [one_two_five_buckets, power_of_two_buckets])
def test_a_maximum_below_one_is_rejected(builder):
    with pytest.raises(ValueError, match="at least 1"):
        builder(0)
