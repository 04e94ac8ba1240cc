"""Time of a layer's worth of weight products through each CPU path, by row count.

    .venv/bin/python benchmarks/matmul_products.py --rows 1 8 64 128 512 2048

For each row count M: one jitted function multiplies an fp32 ``x [M, K]`` by ``--products``
distinct bf16 weights ``[K, N]`` one after the other, each x depending on the last product
(SmolLM2's MLP shape by default, 30 of them so that the weights, 53 MB, stream from memory as
in a decode step) through

* ``packed``: the ``cpu`` backend's packed kernel (``bf16_packed_matmul``, weights packed once);
* ``xla_bf16``: XLA's dot with x rounded to bf16 (what ``matmul`` falls back to);
* ``xla_f32``: XLA's fp32 dot on fp32 copies of the weights (twice the bytes; for reference);
* ``small``: ``small_matmul`` on the weights as stored, up to 8 rows.

``--paths`` picks some of them.

Starts with eSurge's malloc settings (``esurge_core.host_malloc``), as the engine does: without
them every call faults its fresh output buffers in again, which at 512-2048 rows cost the
packed path a third of its rate. Each path runs three rounds of five calls, interleaved with
the others; the best call is printed with its GFLOP/s. Run on a quiet machine and compare paths within one run.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from esurge_attention_cpu.bf16_pair_matmul import bf16_packed_matmul, pack_bf16_weight
from esurge_attention_cpu.small_matmul import small_matmul

from esurge_core.host_malloc import reexec_with_tuned_malloc
from esurge_core.matmul.backend import xla_matmul

SMALL_MATMUL_MAX_ROWS = 8


def _products(kind: str, n: int):
    def run(x, weights, num_rows):
        total = jnp.zeros((), jnp.float32)
        for w in weights:
            if kind == "packed":
                y = bf16_packed_matmul(x, w, num_rows, n=n, out_dtype=jnp.float32)
            elif kind == "small":
                y = small_matmul(x, w, num_rows, transpose_w=False, out_dtype=jnp.float32)
            else:
                y = xla_matmul(x, w, out_dtype=jnp.float32)
            total = total + y[0, 0]  # keeps every product alive
            # Each product waits for the one before, as a model's layers do (independent
            # products may run two at a time on XLA's threads and compete for the cores).
            x = x.at[0, 0].add(y[0, 0] * 1e-30)
        return total

    return jax.jit(run)


def _best_seconds(fn, *args, calls: int = 5) -> float:
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn(*args).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    reexec_with_tuned_malloc()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64, 128, 512, 2048])
    parser.add_argument("--k", type=int, default=576)
    parser.add_argument("--n", type=int, default=1536, help="a multiple of 16")
    parser.add_argument("--products", type=int, default=30)
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["packed", "xla_bf16", "xla_f32", "small"],
        choices=["packed", "xla_bf16", "xla_f32", "small"],
        help="which paths to time",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    bf16 = [
        jnp.asarray(rng.standard_normal((args.k, args.n)) * 0.05, jnp.bfloat16)
        for _ in range(args.products)
    ]
    weights = {
        "packed": [pack_bf16_weight(w) for w in bf16],
        "xla_bf16": bf16,
        "xla_f32": [w.astype(jnp.float32) for w in bf16],
        "small": bf16,
    }
    functions = {
        "packed": _products("packed", args.n),
        "xla_bf16": _products("xla", args.n),
        "xla_f32": _products("xla", args.n),
        "small": _products("small", args.n),
    }
    print(f"jax {jax.__version__}, {args.products} products of {args.k} x {args.n}")
    for rows in args.rows:
        x = jnp.asarray(rng.standard_normal((rows, args.k)), jnp.float32)
        num_rows = jnp.int32(rows)
        kinds = [k for k in args.paths if k != "small" or rows <= SMALL_MATMUL_MAX_ROWS]
        best: dict[str, float] = {}
        for kind in kinds:  # compile
            functions[kind](x, weights[kind], num_rows).block_until_ready()
        for _ in range(3):
            for kind in kinds:
                seconds = _best_seconds(functions[kind], x, weights[kind], num_rows)
                best[kind] = min(best.get(kind, seconds), seconds)
        flop = 2 * rows * args.k * args.n * args.products
        cells = [f"{k} {s * 1e3:.1f} ms ({flop / s / 1e9:.0f} GFLOP/s)" for k, s in best.items()]
        print(f"{rows} rows: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
