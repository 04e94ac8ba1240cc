"""The CPU attention kernel alone on a step of 64 sequences of SmolLM2's shape.

    .venv/bin/python benchmarks/attention_decode_times.py --context 192 560
    .venv/bin/python benchmarks/attention_decode_times.py --context 560 --shared
    .venv/bin/python benchmarks/attention_decode_times.py --context 528 --query-len 16
    .venv/bin/python benchmarks/attention_decode_times.py --seqs 1 --context 1024 2048 \
        --span-min-keys 0 512 --chain 30 --alternations 60

64 sequences of ``--query-len`` new tokens each (default 1: a decode step; W4's prefill
step has 16 per sequence after the shared prefix), 9 query / 3 kv heads of 64, fp32 queries
over a bf16 cache in pages of 16 scattered at random (over ``--cache-mb`` MB where given);
``--shared``: every sequence's pages but its last five are the first sequence's (a shared
prefix, as in W4). Prints the best time
of one call (one layer) over ``--repeats`` chained calls (``--chain N``: N calls chained in
one compiled function, the best time of it divided by N), and its rate in GFLOP/s (QK and
PV over the visible keys).

``--span-min-keys A B ...`` times the kernel with each ``decode_span_min_keys`` (0: one item per
decode token; docs/attention.md) on the same inputs, alternated ``--alternations`` times in one
process (the best of five calls each time), and prints each setting's median and how often
the last one was faster than the first.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from esurge_attention_cpu import kernel

Q_HEADS, KV_HEADS, HEAD_DIM, PAGE_SIZE = 9, 3, 64, 16


def layer_calls(
    seqs: int,
    context: int,
    query_len: int,
    shared: bool,
    chain: int,
    cache_mb: int,
    span_min_keys: list[int],
):
    """One compiled chain of ``chain`` calls per span setting, and their inputs."""
    pages_per_seq = -(-context // PAGE_SIZE)
    rng = np.random.default_rng(0)
    page_bytes = PAGE_SIZE * 2 * KV_HEADS * HEAD_DIM * 2
    num_pages = max(seqs * pages_per_seq + 1, (cache_mb << 20) // page_bytes)
    shape = (num_pages, PAGE_SIZE, 2 * KV_HEADS, HEAD_DIM)
    kv = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
    order = rng.permutation(np.arange(1, num_pages))
    table = order[: seqs * pages_per_seq].reshape(seqs, pages_per_seq).astype(np.int32)
    if shared:
        table[:, : pages_per_seq - 5] = table[0, : pages_per_seq - 5]
    q = jnp.asarray(rng.standard_normal((seqs * query_len, Q_HEADS, HEAD_DIM)), jnp.float32)
    operands = (
        kv,
        jnp.full((seqs,), context, jnp.int32),
        jnp.asarray(table),
        jnp.arange(0, seqs * query_len + 1, query_len, dtype=jnp.int32),
        jnp.asarray([seqs], jnp.int32),
    )

    def layers(q, *rest, span):  # `chain` calls, each fed the last one's output, as layers are
        for _ in range(chain):
            attended = kernel.ragged_paged_attention(
                q, *rest, sm_scale=0.125, decode_span_min_keys=span
            )
            q = q + attended * 1e-6
        return q

    calls = {
        span: jax.jit(lambda q, *rest, span=span: layers(q, *rest, span=span))
        for span in span_min_keys
    }
    for call in calls.values():
        call(q, *operands).block_until_ready()
    return calls, q, operands


def best_seconds(call, q, operands, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        q = call(q, *operands)
        q.block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, nargs="+", default=[192, 560])
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--query-len", type=int, default=1)
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--span-min-keys",
        type=int,
        nargs="+",
        default=[kernel.DECODE_SPAN_MIN_KEYS],
        help="decode_span_min_keys settings to time side by side (0: one item per decode token)",
    )
    parser.add_argument("--alternations", type=int, default=60)
    parser.add_argument(
        "--chain",
        type=int,
        default=1,
        help="calls chained in one compiled function (a step's layers; for small batches, "
        "whose single call is mostly the dispatch of a compiled function)",
    )
    parser.add_argument(
        "--cache-mb",
        type=int,
        default=0,
        help="size of the KV cache the pages are scattered in (default: just the pages used, "
        "which fit a large L3; W1's engine scatters them in hundreds of MB)",
    )
    args = parser.parse_args()
    for context in args.context:
        calls, q, operands = layer_calls(
            args.seqs,
            context,
            args.query_len,
            args.shared,
            args.chain,
            args.cache_mb,
            args.span_min_keys,
        )
        visible = sum(context - args.query_len + 1 + i for i in range(args.query_len))
        flops = 4 * args.seqs * Q_HEADS * visible * HEAD_DIM
        label = (
            f"context {context}, {args.query_len} new tokens"
            f"{' shared prefix' if args.shared else ''}"
        )
        if len(calls) == 1:
            seconds = best_seconds(*calls.values(), q, operands, args.repeats) / args.chain
            print(f"{label}: {seconds * 1e3:.3f} ms per layer, {flops / seconds / 1e9:.0f} GFLOP/s")
            continue
        times: dict[int, list[float]] = {span: [] for span in calls}
        order = list(calls)
        for turn in range(args.alternations):
            for span in order if turn % 2 == 0 else order[::-1]:
                times[span].append(best_seconds(calls[span], q, operands, 5) / args.chain)
        for span, seconds in times.items():
            print(
                f"{label}, decode_span_min_keys {span}: {statistics.median(seconds) * 1e6:.1f} us "
                f"per layer (median of {args.alternations} best-of-5)"
            )
        first, last = times[order[0]], times[order[-1]]
        won = sum(b < a for a, b in zip(first, last, strict=True))
        print(f"  decode_span_min_keys {order[-1]} faster than {order[0]} in {won} of {len(first)}")


if __name__ == "__main__":
    main()
