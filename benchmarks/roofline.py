"""The roofline of each benchmark workload on this machine: measured peak rates, floor times.

    .venv/bin/python benchmarks/roofline.py

Measures the machine (JAX on CPU, as eSurge runs): matrix-product rate in fp32 and in bf16
with fp32 accumulation at the shapes SmolLM2-135M's decode (M = 64) and prefill (M = 2048)
steps use, and memory bandwidth (a reduction over 1 GiB). Then counts, for each workload of
``compare_peers.py``, the FLOPs (matrix products: 2 x non-embedding parameters per token,
the LM head only for rows that sample, attention 4 x context x heads x head_dim per layer) and
the bytes (weights once per step, the K/V each step reads and writes), and prints the floor
time max(FLOPs / rate, bytes / bandwidth) summed over the workload's steps as a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp

# SmolLM2-135M-Instruct.
LAYERS, HIDDEN, INTERMEDIATE, VOCAB = 30, 576, 1536, 49152
Q_HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64
LAYER_PARAMS = HIDDEN * (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM + Q_HEADS * HEAD_DIM * HIDDEN
LAYER_PARAMS += 3 * HIDDEN * INTERMEDIATE
BODY_PARAMS = LAYERS * LAYER_PARAMS  # matrix weights of the decoder layers
HEAD_PARAMS = VOCAB * HIDDEN  # tied embedding / LM head


def _best_seconds(fn, *args, repeats: int = 5, inner: int = 10) -> float:
    fn(*args).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def matmul_rate(m: int, k: int, n: int, dtype) -> float:
    """Measured FLOP/s of an [m, k] x [k, n] product with fp32 accumulation."""
    a = jnp.ones((m, k), dtype)
    b = jnp.ones((k, n), dtype) * 0.01
    fn = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    return 2 * m * k * n / _best_seconds(fn, a, b)


def memory_bandwidth() -> float:
    """Measured bytes/s of a sum over a 1 GiB fp32 array (read once)."""
    x = jnp.ones((1 << 28,), jnp.float32)
    return x.nbytes / _best_seconds(jax.jit(jnp.sum), x, repeats=3, inner=3)


@dataclass(frozen=True)
class Step:
    """One engine step: tokens computed, rows sampled, K/V tokens read."""

    tokens: int
    sampled: int
    kv_read_tokens: int  # summed over the step's query tokens' visible context (attention)
    kv_scan_tokens: int  # distinct K/V tokens read from the cache (memory)


def step_cost(step: Step, weight_bytes: int, kv_bytes: int) -> tuple[float, float]:
    flops = 2 * BODY_PARAMS * step.tokens + 2 * HEAD_PARAMS * step.sampled
    flops += 4 * step.kv_read_tokens * Q_HEADS * HEAD_DIM * LAYERS
    token_kv = 2 * KV_HEADS * HEAD_DIM * kv_bytes * LAYERS
    moved = weight_bytes + token_kv * (step.kv_scan_tokens + step.tokens)
    return flops, moved


def workloads() -> dict[str, tuple[list[Step], int]]:
    """Steps of each workload (as eSurge schedules them) and its output tokens."""
    # Four 2048-token prefill steps of 16 prompts of 128 each, then the decode steps.
    w1 = [Step(2048, 16, 16 * 128 * 129 // 2, 16 * 128) for _ in range(4)]
    for i in range(1, 128):  # decode steps of all 64 (the prefill sampled the first token)
        ctx = 128 + i
        w1.append(Step(64, 64, 64 * ctx, 64 * ctx))
    w2 = [Step(128, 1, 128 * 129 // 2, 128)] + [Step(1, 1, 128 + i, 128 + i) for i in range(1, 128)]
    w4 = [Step(528, 1, 528 * 529 // 2, 528)]  # the first request computes the prefix
    w4.append(Step(63 * 16, 63, 63 * 16 * 520, 63 * 528))  # the rest: 16 own tokens each
    for i in range(1, 64):
        ctx = 528 + i
        w4.append(Step(64, 64, 64 * ctx, 64 * ctx))
    return {"W1": (w1, 64 * 128), "W2": (w2, 128), "W4": (w4, 64 * 64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    rates = {
        ("float32", 64): matmul_rate(64, HIDDEN, INTERMEDIATE, jnp.float32),
        ("float32", 2048): matmul_rate(2048, HIDDEN, INTERMEDIATE, jnp.float32),
        ("float32", 1): matmul_rate(1, HIDDEN, INTERMEDIATE, jnp.float32),
        ("bfloat16", 64): matmul_rate(64, HIDDEN, INTERMEDIATE, jnp.bfloat16),
        ("bfloat16", 2048): matmul_rate(2048, HIDDEN, INTERMEDIATE, jnp.bfloat16),
        ("bfloat16", 1): matmul_rate(1, HIDDEN, INTERMEDIATE, jnp.bfloat16),
    }
    bandwidth = memory_bandwidth()
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
    print("| measured | rate |\n|---|---|")
    for (dtype, m), rate in rates.items():
        print(f"| matmul {dtype} M={m} x {HIDDEN} x {INTERMEDIATE} | {rate / 1e9:.0f} GFLOP/s |")
    print(f"| memory bandwidth (sum over 1 GiB) | {bandwidth / 1e9:.1f} GB/s |")
    print()
    print("| workload | weights | GFLOP | GB moved | floor s | floor output tok/s |")
    print("|---|---|---|---|---|---|")
    for name, (steps, outputs) in workloads().items():
        for dtype, weight_bytes in (("float32", 4), ("bfloat16", 2)):
            total_flops = total_bytes = floor = 0.0
            for step in steps:
                flops, moved = step_cost(step, (BODY_PARAMS + HEAD_PARAMS) * weight_bytes, 4)
                bucket = 1 if step.tokens == 1 else 64 if step.tokens <= 64 else 2048
                floor += max(flops / rates[(dtype, bucket)], moved / bandwidth)
                total_flops += flops
                total_bytes += moved
            per = f"{outputs / floor:.0f}" if name != "W2" else f"{floor / 128 * 1e3:.2f} ms/token"
            print(
                f"| {name} | {dtype} | {total_flops / 1e9:.0f} | {total_bytes / 1e9:.1f} | "
                f"{floor:.2f} | {per} |"
            )


if __name__ == "__main__":
    main()
