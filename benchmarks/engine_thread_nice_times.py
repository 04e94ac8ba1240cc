"""W2-shaped streams with the engine's loop thread at different nice values, in one process.

    .venv/bin/python benchmarks/engine_thread_nice_times.py --nice 0 -5 --pairs 10

One engine (SmolLM2-135M-Instruct, bf16 weights and KV cache, as W1-W4 run it) streams a
128-token random prompt for 128 greedy tokens per run; before each run its loop thread is
given the next nice value of ``--nice`` (the order alternating from pair to pair), as
``engine_thread_nice`` would set it. Prints, per value, the median time per output token
(after the first) and TTFT, each pair's times, and in how many pairs the second value beat
the first. Values below the process's need CAP_SYS_NICE (root has it).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, nargs=2, default=[0, -5], metavar=("A", "B"))
    parser.add_argument("--pairs", type=int, default=10)
    args = parser.parse_args()
    if args.pairs < 1 or not all(-20 <= v <= 19 for v in args.nice):
        parser.error("--pairs must be at least 1 and --nice values in -20..19")
    from peers.esurge_peer import timed_stream, workload_engine

    from esurge_core import SamplingParams
    from esurge_core.host_malloc import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    engine = workload_engine()
    params = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
    rng = random.Random(0)

    def stream() -> tuple[float, float]:
        return timed_stream(engine, [rng.randrange(100, 40000) for _ in range(128)], params)

    stream()  # compiles, and starts the loop thread
    stream()
    thread = engine._thread.native_id
    per_token: dict[int, list[float]] = {value: [] for value in args.nice}
    ttft: dict[int, list[float]] = {value: [] for value in args.nice}
    for pair in range(args.pairs):
        for value in args.nice if pair % 2 == 0 else args.nice[::-1]:
            os.setpriority(os.PRIO_PROCESS, thread, value)
            first, token = stream()
            per_token[value].append(token)
            ttft[value].append(first)
    engine.close()
    for value in args.nice:
        print(
            f"nice {value:3d}: {statistics.median(per_token[value]):.2f} ms per token, TTFT "
            f"{statistics.median(ttft[value]):.1f} ms (medians); "
            f"{[round(t, 2) for t in per_token[value]]}"
        )
    a, b = args.nice
    won = sum(y < x for x, y in zip(per_token[a], per_token[b], strict=True))
    print(f"nice {b} faster than nice {a} in {won} of {args.pairs} pairs")


if __name__ == "__main__":
    main()
