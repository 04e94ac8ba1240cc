"""A gated MLP's gate/up product with its activation: fused in the kernel against the packed
product followed by XLA's activation.

    .venv/bin/python benchmarks/gated_products.py --rows 64 512 2048

For each row count: one jitted function chains ``--products`` gate/up products of SmolLM2's
shape (576 x 3072 by default, SiLU) through ``bf16_packed_gated_matmul`` (``fused``) or
``bf16_packed_matmul`` plus ``act(gate) * up`` in XLA (``separate``), each x depending on the
last result. Both run in one process, alternating, six rounds of three calls; prints the best
call per product. Needs AVX512-BF16 (the fused kernel's requirement). Used for
docs/PERFORMANCE.md step 35.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from esurge_attention_cpu.bf16_pair_matmul import (
    bf16_packed_gated_matmul,
    bf16_packed_matmul,
    pack_bf16_weight,
)

from esurge_core.host_malloc import reexec_with_tuned_malloc
from esurge_core.models.activations import activation


def _chain(fused: bool, n: int, act):
    def run(x, weights, num_rows):
        total = jnp.zeros((), jnp.float32)
        for w in weights:
            if fused:
                h = bf16_packed_gated_matmul(
                    x, w, num_rows, n=n, activation=act.name, out_dtype=jnp.float32
                )
            else:
                gate_up = bf16_packed_matmul(x, w, num_rows, n=n, out_dtype=jnp.float32)
                h = act(gate_up[:, : n // 2]) * gate_up[:, n // 2 :]
            total = total + h[0, 0]
            x = x.at[0, 0].add(h[0, 0] * 1e-30)  # each product waits for the one before
        return total

    return jax.jit(run)


def main() -> None:
    reexec_with_tuned_malloc()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--k", type=int, default=576)
    parser.add_argument("--n", type=int, default=3072, help="gate and up: a multiple of 128")
    parser.add_argument("--activation", default="silu", help="a Hugging Face name")
    parser.add_argument("--products", type=int, default=30)
    args = parser.parse_args()
    act = activation(args.activation)
    rng = np.random.default_rng(0)
    weights = [
        pack_bf16_weight(jnp.asarray(rng.standard_normal((args.k, args.n)) * 0.05, jnp.bfloat16))
        for _ in range(args.products)
    ]
    chains = {kind: _chain(kind == "fused", args.n, act) for kind in ("separate", "fused")}
    for rows in args.rows:
        x = jnp.asarray(rng.standard_normal((rows, args.k)), jnp.float32)
        num_rows = jnp.int32(rows)
        best = {}
        for kind, chain in chains.items():  # compile
            chain(x, weights, num_rows).block_until_ready()
            best[kind] = float("inf")
        for _ in range(6):
            for kind, chain in chains.items():
                for _ in range(3):
                    start = time.perf_counter()
                    chain(x, weights, num_rows).block_until_ready()
                    best[kind] = min(best[kind], time.perf_counter() - start)
        cells = ", ".join(f"{k} {s * 1e3 / args.products:.2f} ms" for k, s in best.items())
        print(f"{rows} rows, per gate/up product: {cells}", flush=True)


if __name__ == "__main__":
    main()
