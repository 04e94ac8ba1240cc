"""Padded sizes ("buckets") so the compiled step sees few distinct shapes.

The number of tokens T, sequences S and pages per sequence P of a step are each padded up to
a power of two, starting at ``min_input_pad`` and capped at the configured maximum (the cap is
itself a bucket even when not a power of two). In the steady state every step falls into a
bucket that was already compiled, so nothing recompiles.
"""

from __future__ import annotations


def power_of_two_buckets(minimum: int, maximum: int) -> tuple[int, ...]:
    """``minimum, 2*minimum, 4*minimum, ...`` below ``maximum``, then ``maximum``."""
    if maximum < 1:
        raise ValueError(f"bucket maximum must be >= 1; got {maximum}")
    buckets = []
    size = max(1, min(minimum, maximum))
    while size < maximum:
        buckets.append(size)
        size *= 2
    buckets.append(maximum)
    return tuple(buckets)


def bucket_for(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding ``size``.

    Raises:
        ValueError: ``size`` exceeds the largest bucket.
    """
    for bucket in buckets:
        if size <= bucket:
            return bucket
    raise ValueError(f"size {size} exceeds the largest bucket {buckets[-1]}")
