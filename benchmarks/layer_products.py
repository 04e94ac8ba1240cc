"""The weight products of a SmolLM2 decode step alone, in the step's order, and their rate.

    .venv/bin/python benchmarks/layer_products.py --rows 1 64
    .venv/bin/python benchmarks/layer_products.py --rows 1 --merged

For each row count: one jitted function runs, for each of SmolLM2-135M's 30 layers, the
fused q/k/v product (576 x 960), the O product (576 x 576), the fused gate/up product with
its activation (576 x 3072 -> 1536) and the down product (1536 x 576), each fed the last
one's output as the layers are, then the tied LM head (576 x 49152), all through the ``cpu``
backend's packed kernels on random bf16 weights packed once (269 MB, streamed from memory as
in a decode step). Prints the best and median time of the chain over ``--repeats`` calls,
the weights' rate at the best (GB/s: the floor of a batch-1 step is these bytes at the
machine's read bandwidth) and the products' GFLOP/s. Nothing else of the step runs, so the
difference to ``decode_step_times.py`` is attention, XLA's ops and the gaps between them
(docs/PERFORMANCE.md, step 41).

``--merged`` also runs the same bytes as one product per layer (576 x 6144 each: a layer's
four weights as one matrix) and the head, and as four long products (576 x 58368 each):
what the products would stream at if each layer were one native call (docs/PERFORMANCE.md,
step 42).

``--huge-pages N`` instead times the step's chain on two sets of the same weights, one moved
into transparent huge pages (``esurge_core.host_huge_pages``, as ``huge_page_weights`` does
for an engine), N alternations each, and prints both medians and how often the huge pages won
(docs/PERFORMANCE.md, step 47).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from esurge_attention_cpu.bf16_pair_matmul import (
    bf16_packed_gated_matmul,
    bf16_packed_matmul,
    pack_bf16_weight,
)

from esurge_core.host_huge_pages import back_with_huge_pages
from esurge_core.host_malloc import reexec_with_tuned_malloc

# SmolLM2-135M-Instruct.
LAYERS, HIDDEN, INTERMEDIATE, VOCAB = 30, 576, 1536, 49152
QKV = 576 + 2 * 3 * 64  # 9 query heads, 3 kv heads of 64
SHAPES = {"qkv": (HIDDEN, QKV), "o": (HIDDEN, HIDDEN), "gate_up": (HIDDEN, 2 * INTERMEDIATE)}
SHAPES["down"] = (INTERMEDIATE, HIDDEN)


def _chain(x, layers, head, num_rows):
    f32 = jnp.float32
    for weights in layers:
        qkv = bf16_packed_matmul(x, weights["qkv"], num_rows, n=QKV, out_dtype=f32)
        x = x + bf16_packed_matmul(qkv[:, :HIDDEN], weights["o"], num_rows, n=HIDDEN, out_dtype=f32)
        gated = bf16_packed_gated_matmul(
            x, weights["gate_up"], num_rows, n=2 * INTERMEDIATE, activation="silu", out_dtype=f32
        )
        x = x + bf16_packed_matmul(gated, weights["down"], num_rows, n=HIDDEN, out_dtype=f32)
    return bf16_packed_matmul(x, head, num_rows, n=VOCAB, out_dtype=f32)


def _merged_chain(x, weights, columns, num_rows):
    """One product per matrix of ``weights``, each fed the last one's first HIDDEN columns."""
    for w, n in zip(weights, columns):
        x = x + bf16_packed_matmul(x, w, num_rows, n=n, out_dtype=jnp.float32)[:, :HIDDEN]
    return x


def _report(name, function, args, rows, weight_bytes, repeats) -> None:
    jax.block_until_ready(function(*args))  # compile
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    flops = 2 * rows * (weight_bytes // 2)  # a multiply and an add per bf16 weight and row
    print(
        f"{name}, {rows} rows: best {best * 1e3:.2f} ms, median "
        f"{statistics.median(seconds) * 1e3:.2f} ms; {weight_bytes / best / 1e9:.1f} GB/s, "
        f"{flops / best / 1e9:.0f} GFLOP/s at the best"
    )


def _weight_set(packed) -> tuple[list[dict], jax.Array]:
    """The step's weights: each layer's four packed matrices, and the head."""
    layers = [{name: packed(*shape) for name, shape in SHAPES.items()} for _ in range(LAYERS)]
    return layers, packed(HIDDEN, VOCAB)


def _compare_huge_pages(chain, weights, packed, row_counts, alternations, rng) -> None:
    """The chain on ``weights`` (small pages) and on a second set moved into huge pages."""
    huge = _weight_set(packed)
    moved = back_with_huge_pages(jax.tree.leaves(huge))
    print(f"{moved / 1e6:.0f} MB of the second set moved into huge pages")
    for rows in row_counts:
        x = jnp.asarray(rng.standard_normal((rows, HIDDEN)) * 0.1, jnp.float32)
        num_rows = jnp.int32(rows)
        sets = {"small pages": weights, "huge pages": huge}
        times: dict[str, list[float]] = {name: [] for name in sets}
        for layers, head in sets.values():
            jax.block_until_ready(chain(x, layers, head, num_rows))  # compile, first touch
        names = list(sets)
        for pair in range(alternations):
            for name in names if pair % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                jax.block_until_ready(chain(x, *sets[name], num_rows))
                times[name].append((time.perf_counter() - start) * 1e3)
        won = sum(b < a for a, b in zip(*times.values(), strict=True))
        print(
            f"{rows} rows: small pages {statistics.median(times['small pages']):.2f} ms, "
            f"huge pages {statistics.median(times['huge pages']):.2f} ms (medians); "
            f"huge pages faster in {won} of {alternations}"
        )


def main() -> None:
    reexec_with_tuned_malloc()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--merged",
        action="store_true",
        help="also run the layers' bytes as one product per layer and as four long products",
    )
    parser.add_argument(
        "--huge-pages",
        type=int,
        default=0,
        metavar="N",
        help="compare the chain on weights in small and in huge pages, N alternations",
    )
    args = parser.parse_args()
    if any(rows < 1 for rows in args.rows) or args.repeats < 1 or args.huge_pages < 0:
        parser.error("--rows and --repeats must be at least 1, --huge-pages at least 0")
    rng = np.random.default_rng(0)

    def packed(k: int, n: int) -> jax.Array:
        w = rng.standard_normal((k, n), np.float32) * 0.02
        return pack_bf16_weight(jnp.asarray(w, jnp.bfloat16))

    layers, head = _weight_set(packed)
    weight_bytes = 2 * (LAYERS * sum(k * n for k, n in SHAPES.values()) + HIDDEN * VOCAB)
    chain = jax.jit(_chain)
    if args.huge_pages:
        _compare_huge_pages(chain, (layers, head), packed, args.rows, args.huge_pages, rng)
        return
    print(f"jax {jax.__version__}: {LAYERS} layers + head, {weight_bytes / 1e6:.0f} MB of weights")
    # The same bytes as the step's products: each layer's as one 576-row matrix, and all of
    # them (with the head) as four.
    layer_columns = sum(k * n for k, n in SHAPES.values()) // HIDDEN
    total_columns = LAYERS * layer_columns + VOCAB
    merged = {
        "one product per layer and the head": [layer_columns] * LAYERS + [VOCAB],
        "four long products": [total_columns // 4] * 4,
    }
    merged_weights = (
        {name: [packed(HIDDEN, n) for n in columns] for name, columns in merged.items()}
        if args.merged
        else {}
    )
    for rows in args.rows:
        x = jnp.asarray(rng.standard_normal((rows, HIDDEN)) * 0.1, jnp.float32)
        num_rows = jnp.int32(rows)
        _report(
            "the step's products",
            chain,
            (x, layers, head, num_rows),
            rows,
            weight_bytes,
            args.repeats,
        )
        for name, weights in merged_weights.items():
            columns = merged[name]
            function = jax.jit(
                lambda x, w, r, columns=tuple(columns): _merged_chain(x, w, columns, r)
            )
            _report(
                name,
                function,
                (x, weights, num_rows),
                rows,
                2 * HIDDEN * sum(columns),
                args.repeats,
            )


if __name__ == "__main__":
    main()
