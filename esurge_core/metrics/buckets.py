"""Histogram bucket boundaries (vLLM's, so dashboards and alerts carry over)."""

from __future__ import annotations

#: Time to first token, seconds.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip

#: Inter-token latency, seconds.
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip

#: Whole-request phases (end-to-end, queue, prefill, decode), seconds.
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

#: One engine step (schedule + forward + sampling + host bookkeeping), seconds.
STEP_TIME_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def one_two_five_buckets(maximum: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to and including ``maximum`` (vLLM's token-count buckets)."""
    if maximum < 1:
        raise ValueError(f"the largest bucket must be at least 1; got {maximum}")
    buckets: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * scale
            if value > maximum:
                return (*buckets, float(maximum)) if buckets[-1] != maximum else tuple(buckets)
            buckets.append(float(value))
        scale *= 10


def power_of_two_buckets(maximum: int) -> tuple[float, ...]:
    """1, 2, 4, ... up to and including ``maximum`` (tokens scheduled in one step)."""
    if maximum < 1:
        raise ValueError(f"the largest bucket must be at least 1; got {maximum}")
    buckets = []
    value = 1
    while value < maximum:
        buckets.append(float(value))
        value *= 2
    buckets.append(float(maximum))
    return tuple(buckets)
