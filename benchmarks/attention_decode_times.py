"""The CPU attention kernel alone on a batch-64 decode step of SmolLM2's shape.

    .venv/bin/python benchmarks/attention_decode_times.py --context 192 560
    .venv/bin/python benchmarks/attention_decode_times.py --context 560 --shared

64 sequences of one new token each, 9 query / 3 kv heads of 64, fp32 queries over a bf16
cache in pages of 16 scattered at random; ``--shared``: every sequence's pages but its last
five are the first sequence's (a shared prefix, as in W4). Prints the best time of one call
(one layer) over ``--repeats`` chained calls, and its rate in GFLOP/s (QK and PV).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from esurge_attention_cpu import kernel

SEQS, Q_HEADS, KV_HEADS, HEAD_DIM, PAGE_SIZE = 64, 9, 3, 64, 16


def time_one(context: int, shared: bool, repeats: int) -> float:
    pages_per_seq = -(-context // PAGE_SIZE)
    rng = np.random.default_rng(0)
    num_pages = SEQS * pages_per_seq + 1
    shape = (num_pages, PAGE_SIZE, 2 * KV_HEADS, HEAD_DIM)
    kv = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
    order = rng.permutation(np.arange(1, num_pages))
    table = order[: SEQS * pages_per_seq].reshape(SEQS, pages_per_seq).astype(np.int32)
    if shared:
        table[:, : pages_per_seq - 5] = table[0, : pages_per_seq - 5]
    q = jnp.asarray(rng.standard_normal((SEQS, Q_HEADS, HEAD_DIM)), jnp.float32)
    operands = (
        kv,
        jnp.full((SEQS,), context, jnp.int32),
        jnp.asarray(table),
        jnp.arange(SEQS + 1, dtype=jnp.int32),
        jnp.asarray([SEQS], jnp.int32),
    )
    call = jax.jit(lambda q, *rest: kernel.ragged_paged_attention(q, *rest, sm_scale=0.125))
    call(q, *operands).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        q = q + call(q, *operands) * 1e-6  # chained, as a model's layers are
        q.block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, nargs="+", default=[192, 560])
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    for context in args.context:
        seconds = time_one(context, args.shared, args.repeats)
        flops = 4 * SEQS * Q_HEADS * context * HEAD_DIM
        print(
            f"context {context}{' shared prefix' if args.shared else ''}: "
            f"{seconds * 1e3:.3f} ms per layer, {flops / seconds / 1e9:.0f} GFLOP/s"
        )


if __name__ == "__main__":
    main()
