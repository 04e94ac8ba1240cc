"""W2-shaped streams and W1-shaped batches from two engines in one process, their weights in
small pages and in transparent huge pages (``huge_page_weights``), alternated.

    .venv/bin/python benchmarks/huge_page_weights_times.py --pairs 8
    .venv/bin/python benchmarks/huge_page_weights_times.py --pairs 4 --batch 64

Two engines of SmolLM2-135M-Instruct (bf16 weights and KV cache, as W1-W4 run them), one
with ``huge_page_weights=False`` and one with ``True``, run the same work in turns, the
order alternating from pair to pair. With ``--batch 1`` (default) a turn streams a
128-token random prompt for 128 greedy tokens (W2: time per output token after the first);
with a larger batch it generates that many such requests together (W1's shape: output
tokens/s). Prints each engine's median and every turn, and in how many pairs the huge pages
won. Prints how much of each engine's params ended up in huge pages first (AnonHugePages of
the process before and after the second engine moved its weights).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path


def _anon_huge_mb() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--output-len", type=int, default=128)
    args = parser.parse_args()
    if args.pairs < 1 or args.batch < 1 or args.output_len < 2:
        parser.error("--pairs and --batch must be at least 1, --output-len at least 2")
    from peers.esurge_peer import timed_stream, workload_engine

    from esurge_core import SamplingParams
    from esurge_core.host_malloc import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    small = workload_engine(huge_page_weights=False, max_num_seqs=max(64, args.batch))
    before = _anon_huge_mb()
    huge = workload_engine(huge_page_weights=True, max_num_seqs=max(64, args.batch))
    print(
        f"huge_page_weights: {huge.runner.huge_page_bytes / 1e6:.0f} MB of params moved; "
        f"AnonHugePages {before:.0f} -> {_anon_huge_mb():.0f} MB"
    )
    params = SamplingParams(temperature=0, max_tokens=args.output_len, ignore_eos=True)
    rng = random.Random(0)

    def prompt() -> list[int]:
        return [rng.randrange(100, 40000) for _ in range(128)]

    def turn(engine) -> float:
        if args.batch == 1:
            return timed_stream(engine, prompt(), params)[1]
        start = time.perf_counter()
        engine.generate([{"prompt_token_ids": prompt()} for _ in range(args.batch)], params)
        return args.batch * args.output_len / (time.perf_counter() - start)

    engines = {"small pages": small, "huge pages": huge}
    for engine in engines.values():  # compiles, and starts the loop thread
        turn(engine)
        turn(engine)
    results: dict[str, list[float]] = {name: [] for name in engines}
    names = list(engines)
    for pair in range(args.pairs):
        for name in names if pair % 2 == 0 else names[::-1]:
            results[name].append(turn(engines[name]))
    for engine in engines.values():
        engine.close()
    unit = "ms per token" if args.batch == 1 else "output tok/s"
    for name, values in results.items():
        print(
            f"{name}: {statistics.median(values):.2f} {unit} (median); "
            f"{[round(v, 2) for v in values]}"
        )
    better = (lambda a, b: b < a) if args.batch == 1 else (lambda a, b: b > a)
    won = sum(better(a, b) for a, b in zip(*results.values(), strict=True))
    print(f"huge pages better in {won} of {args.pairs} pairs")


if __name__ == "__main__":
    main()
