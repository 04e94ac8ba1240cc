"""Planning ahead (``async_scheduling``) against waiting for each step, by batch size, in one
process.

    .venv/bin/python benchmarks/plan_ahead_times.py --batches 1 2 4 8 16 32 64 --pairs 4

Two engines of the W1-W4 configuration (SmolLM2-135M-Instruct, bf16 weights and KV cache)
live in one process, one with ``async_scheduling=True`` (plans ahead of every step), one with
``False``. For each batch size B and each pair: both generate B prompts of 128 random tokens,
``--output-len`` tokens each (``ignore_eos``), one after the other, alternating which goes
first; a first pair of each size warms up and is not counted. Prints each setting's median
output tokens/s (prefill included), their ratio and in how many pairs planning ahead was
faster. On a 2-core machine the spread between processes (10-20%) is larger than the effect,
which is why both run in one (docs/PERFORMANCE.md step 42, where this measured the CPU
default ``CPU_PLAN_AHEAD_MAX_SEQS``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from peers.esurge_peer import workload_engine

from esurge_core import SamplingParams
from esurge_core.host_malloc import reexec_with_tuned_malloc

PROMPT_LEN = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--pairs", type=int, default=4, help="timed pairs per batch size")
    parser.add_argument("--output-len", type=int, default=64)
    args = parser.parse_args()
    if min(args.batches) < 1 or args.pairs < 1 or args.output_len < 1:
        parser.error("--batches, --pairs and --output-len must be at least 1")
    reexec_with_tuned_malloc()
    params = SamplingParams(temperature=0, max_tokens=args.output_len, ignore_eos=True)
    engines = {
        ahead: workload_engine(max_num_seqs=max(64, *args.batches), async_scheduling=ahead)
        for ahead in (True, False)
    }
    try:
        for batch in args.batches:
            rates: dict[bool, list[float]] = {True: [], False: []}
            for pair in range(args.pairs + 1):  # pair 0 warms up
                rng = random.Random(batch * 1000 + pair)
                prompts = [
                    {"prompt_token_ids": [rng.randrange(1000, 40000) for _ in range(PROMPT_LEN)]}
                    for _ in range(batch)
                ]
                order = (True, False) if pair % 2 else (False, True)
                for ahead in order:
                    start = time.perf_counter()
                    engines[ahead].generate(prompts, params)
                    if pair:
                        rates[ahead].append(batch * args.output_len / (time.perf_counter() - start))
            ahead, waiting = statistics.median(rates[True]), statistics.median(rates[False])
            faster = sum(a > w for a, w in zip(rates[True], rates[False]))
            print(
                f"batch {batch}: planning ahead {ahead:.1f}, waiting {waiting:.1f} output tok/s "
                f"(median of {args.pairs}); {ahead / waiting:.3f}x, faster in {faster} of "
                f"{args.pairs} pairs",
                flush=True,
            )
    finally:
        for engine in engines.values():
            engine.close()


if __name__ == "__main__":
    main()
