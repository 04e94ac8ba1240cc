"""Where W4's time goes: one timed W4 run (64 requests sharing a 512-token prefix, 64 output
tokens each) with the time of every engine step and the tokens it scheduled.

    .venv/bin/python benchmarks/shared_prefix_steps.py            # prefix caching on
    .venv/bin/python benchmarks/shared_prefix_steps.py --off      # and off

Same engine, prompts and warm-up as ``compare_peers.py``'s W4 through ``esurge_peer.py``.
Prints the total, each step that scheduled more than one token per request (prefill) and the
count and mean time of the decode steps.
"""

from __future__ import annotations

import argparse
import time

from compare_peers import shared_prefix
from peers.esurge_peer import warm_up, workload_engine

from esurge_core import SamplingParams
from esurge_core.host_malloc import reexec_with_tuned_malloc

NUM_REQUESTS, PREFIX_LEN, SUFFIX_LEN, OUTPUT_LEN = 64, 512, 16, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--off", action="store_true", help="prefix caching off")
    args = parser.parse_args()
    reexec_with_tuned_malloc()
    engine = workload_engine(enable_prefix_caching=not args.off)
    params = SamplingParams(temperature=0, max_tokens=OUTPUT_LEN, ignore_eos=True)
    warm_up(engine, shared_prefix(NUM_REQUESTS, PREFIX_LEN, SUFFIX_LEN, 200), params)
    plans: list[tuple[float, int, int]] = []
    schedule = engine.scheduler.schedule

    def logged_schedule():
        plan = schedule()
        plans.append((time.perf_counter(), plan.num_scheduled_tokens, len(plan.chunks)))
        return plan

    engine.scheduler.schedule = logged_schedule
    prompts = shared_prefix(NUM_REQUESTS, PREFIX_LEN, SUFFIX_LEN, 2)
    start = time.perf_counter()
    engine.generate([{"prompt_token_ids": p} for p in prompts], params)
    end = time.perf_counter()
    engine.close()
    print(f"total {end - start:.2f} s, {NUM_REQUESTS * OUTPUT_LEN / (end - start):.1f} tok/s")
    decode_times = []
    for i, (at, tokens, chunks) in enumerate(plans):
        took = (plans[i + 1][0] if i + 1 < len(plans) else end) - at
        if tokens == 0:
            continue
        if tokens == chunks:
            decode_times.append(took)
        else:
            print(f"step {i}: {tokens} tokens for {chunks} requests, {took * 1e3:.1f} ms")
    if decode_times:
        mean = sum(decode_times) / len(decode_times)
        print(f"{len(decode_times)} decode steps, mean {mean * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
