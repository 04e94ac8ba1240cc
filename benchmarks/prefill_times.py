"""Time of prefill alone: one ``generate`` of N prompts of 128 tokens, one output token each.

    .venv/bin/python benchmarks/prefill_times.py --prompts 1 4 16

SmolLM2-135M-Instruct with bf16 weights and KV cache (fp32 activations) and the W1-W4 engine
settings. For each prompt count: ``--repeats`` calls with fresh random prompts (nothing in
the prefix cache); the first compiles and is left out; prints the median and the best of the
rest, and the median count of minor page faults. Compare changes in runs made one after the
other, alternating, on a quiet machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
from peers.esurge_peer import workload_engine

from esurge_core import SamplingParams
from esurge_core.host_malloc import reexec_with_tuned_malloc

PROMPT_LEN = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    reexec_with_tuned_malloc()
    engine = workload_engine()
    rng = np.random.default_rng(0)
    params = SamplingParams(temperature=0, max_tokens=1)
    try:
        for count in args.prompts:
            seconds, faults = [], []
            for _ in range(args.repeats):
                prompts = [
                    {"prompt_token_ids": [int(t) for t in rng.integers(100, 40_000, PROMPT_LEN)]}
                    for _ in range(count)
                ]
                faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                engine.generate(prompts, params)
                seconds.append(time.perf_counter() - start)
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
            timed = seconds[1:]
            print(
                f"{count} prompts x {PROMPT_LEN} tokens: median "
                f"{statistics.median(timed) * 1e3:.1f} ms, best {min(timed) * 1e3:.1f} ms, "
                f"page faults (minor) median {statistics.median(faults[1:]):.0f}",
                flush=True,
            )
    finally:
        engine.close()


if __name__ == "__main__":
    main()
