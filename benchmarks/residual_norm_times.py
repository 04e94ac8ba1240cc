"""The ``cpu`` backend's fused residual add + RMSNorm (``add_rms_norm``) against XLA's.

    .venv/bin/python benchmarks/residual_norm_times.py --chain-rows 1 64 512
    .venv/bin/python benchmarks/residual_norm_times.py --batches 1 64 --pairs 6

``--chain-rows``: for each row count, two jitted chains of 60 (residual add, RMSNorm, packed
576 x 576 product) links, SmolLM2's width and its number of norms a step: one with the norm
as the native call, one as XLA's ops; run alternately 30 times each, prints the best and
median time per chain and what a norm saves.

``--batches``: two engines (SmolLM2-135M-Instruct, bf16 weights and KV cache, as W1-W4 run
it, waiting for each step), one with ``ESURGE_CPU_FUSED_NORMS=1`` and one with ``0``; for
each batch size, ``--pairs`` pairs of ``generate`` calls (that many 128-token random
prompts, 32 greedy tokens each), alternating which goes first, each timing every call of
its compiled step; prints the median decode step of each, and how many pairs the fused norm
won. On a 2-core machine the spread between processes is larger than the effect, which is
why both run in one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

LINKS = 60  # SmolLM2-135M: two norms in each of 30 layers


def chains(rows_list: list[int]) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from esurge_attention_cpu.bf16_pair_matmul import bf16_packed_matmul, pack_bf16_weight
    from esurge_attention_cpu.residual_norm import add_rms_norm

    from esurge_core.models.norms import rms_norm

    rng = np.random.default_rng(0)
    weights = [
        pack_bf16_weight(jnp.asarray(rng.standard_normal((576, 576)) * 0.04, jnp.bfloat16))
        for _ in range(4)
    ]
    norms = [jnp.asarray(1 + 0.1 * rng.standard_normal(576), jnp.bfloat16) for _ in range(4)]

    def chain(native: bool, num_rows):
        def run(x, weights, norms):
            delta = x
            for i in range(LINKS):
                if native:
                    x, h = add_rms_norm(x, delta, norms[i % 4], 1e-5)
                else:
                    x = x + delta
                    h = rms_norm(x, norms[i % 4], 1e-5)
                delta = bf16_packed_matmul(h, weights[i % 4], num_rows, n=576)
            return x + delta

        return jax.jit(run)

    for rows in rows_list:
        num_rows = jnp.asarray([rows], jnp.int32)
        x = jnp.asarray(rng.standard_normal((max(rows, 8), 576)), jnp.float32)
        runs = {"native": chain(True, num_rows), "xla": chain(False, num_rows)}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for run in runs.values():
            jax.block_until_ready(run(x, weights, norms))
        for _ in range(30):
            for name, run in runs.items():
                start = time.perf_counter()
                jax.block_until_ready(run(x, weights, norms))
                times[name].append(time.perf_counter() - start)
        best = {name: min(t) * 1e3 for name, t in times.items()}
        median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        saved = (best["xla"] - best["native"]) / LINKS * 1e3
        print(
            f"{rows:4d} rows: native best {best['native']:.3f} (median {median['native']:.3f}) "
            f"ms, XLA best {best['xla']:.3f} (median {median['xla']:.3f}) ms per {LINKS} links;"
            f" {saved:.1f} us a norm"
        )


def steps(batches: list[int], pairs: int) -> None:
    import jax
    from esurge_attention_cpu.matmul_backend import FUSED_NORMS_ENV
    from peers.esurge_peer import workload_engine

    from esurge_core import SamplingParams
    from esurge_core.host_malloc import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    engines, step_times = {}, {}
    for setting in ("1", "0"):
        os.environ[FUSED_NORMS_ENV] = setting
        engine = workload_engine(async_scheduling=False, max_num_seqs=max(64, *batches))
        compiled, times = engine.runner._step, []

        def timed(*args, compiled=compiled, times=times):
            start = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - start)
            return out

        engine.runner._step = timed
        engines[setting], step_times[setting] = engine, times
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    rng = random.Random(0)

    def decode_step(setting: str, batch: int) -> float:
        prompts = [[rng.randrange(100, 40000) for _ in range(128)] for _ in range(batch)]
        step_times[setting].clear()
        engines[setting].generate([{"prompt_token_ids": p} for p in prompts], params)
        return statistics.median(step_times[setting][-31:]) * 1e3  # the 31 decode steps

    for batch in batches:
        for setting in engines:  # compiles this batch's shapes
            decode_step(setting, batch)
        medians: dict[str, list[float]] = {"1": [], "0": []}
        for pair in range(pairs):
            for setting in ("1", "0") if pair % 2 == 0 else ("0", "1"):
                medians[setting].append(decode_step(setting, batch))
        won = sum(a < b for a, b in zip(medians["1"], medians["0"], strict=True))
        print(
            f"batch {batch}: decode step {statistics.median(medians['1']):.2f} ms fused, "
            f"{statistics.median(medians['0']):.2f} ms XLA (medians of {pairs} runs); fused "
            f"faster in {won} of {pairs}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain-rows", type=int, nargs="+", default=[])
    parser.add_argument("--batches", type=int, nargs="+", default=[])
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()
    if not args.chain_rows and not args.batches:
        parser.error("give --chain-rows and/or --batches")
    if min([*args.chain_rows, *args.batches, args.pairs]) < 1:
        parser.error("--chain-rows, --batches and --pairs must be at least 1")
    if args.chain_rows:
        chains(args.chain_rows)
    if args.batches:
        steps(args.batches, args.pairs)


if __name__ == "__main__":
    main()
