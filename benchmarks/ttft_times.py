"""W2's time to first token in one process: a streamed request's first token against the
128-token prefill alone, alternated.

    .venv/bin/python benchmarks/ttft_times.py --alternations 12

SmolLM2-135M-Instruct with the W1-W4 engine settings. Each alternation, with fresh random
128-token prompts (nothing in the prefix cache): the TTFT of a stream of 128 greedy tokens
(as compare_peers.py's W2 measures it), of a stream of 8, and the time of ``generate`` with
one output token (the prefill step and its return). Prints the medians and every value.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from peers.esurge_peer import timed_stream, workload_engine

from esurge_core import SamplingParams
from esurge_core.host_malloc import reexec_with_tuned_malloc

PROMPT_LEN = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alternations", type=int, default=12)
    args = parser.parse_args()
    if args.alternations < 1:
        parser.error("--alternations must be at least 1")
    reexec_with_tuned_malloc()
    engine = workload_engine()
    rng = np.random.default_rng(0)

    def prompt() -> list[int]:
        return [int(t) for t in rng.integers(100, 40_000, PROMPT_LEN)]

    long = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
    short = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    one = SamplingParams(temperature=0, max_tokens=1)

    def prefill_ms() -> float:
        start = time.perf_counter()
        engine.generate([{"prompt_token_ids": prompt()}], one)
        return (time.perf_counter() - start) * 1000

    try:
        timed_stream(engine, prompt(), long)  # compiles the buckets
        timed_stream(engine, prompt(), short)
        prefill_ms()
        times: dict[str, list[float]] = {"stream of 128": [], "stream of 8": [], "prefill": []}
        for _ in range(args.alternations):
            times["stream of 128"].append(timed_stream(engine, prompt(), long)[0])
            times["stream of 8"].append(timed_stream(engine, prompt(), short)[0])
            times["prefill"].append(prefill_ms())
        for name, values in times.items():
            every = " ".join(f"{v:.0f}" for v in values)
            print(f"{name}: median {statistics.median(values):.1f} ms ({every})")
    finally:
        engine.close()


if __name__ == "__main__":
    main()
