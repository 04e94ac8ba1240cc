"""Host cost of the KV-cache manager per engine step.

256 running requests decode one token each per step (an `allocate` each); every step a few
requests finish (`free`) and are replaced by new ones that share a system prompt
(`lookup_prefix` + a 512-token prefill `allocate`). Reports the mean wall time of all manager
calls of one step. Run:

    PYTHONPATH=. python benchmarks/bench_kv_cache.py [--pattern full|hybrid] [--steps 2000]
"""

from __future__ import annotations

import argparse
import random
import time

from esurge_core.kv_cache import KVCacheGroupSpec, KVCacheManager

PATTERNS = {
    "full": (KVCacheGroupSpec("full", tuple(range(30))),),
    "hybrid": (
        KVCacheGroupSpec("full", tuple(range(0, 18, 6))),
        KVCacheGroupSpec(
            "sliding_window", tuple(i for i in range(18) if i % 6), sliding_window=512
        ),
    ),
}


def main() -> None:
    """Run the benchmark and print the per-step figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pattern", choices=sorted(PATTERNS), default="full")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--max-output", type=int, default=512)
    parser.add_argument("--arrivals-per-step", type=int, default=2)
    args = parser.parse_args()

    rng = random.Random(0)
    groups = PATTERNS[args.pattern]
    ps = args.page_size
    pages_per_request = -(-(args.prompt_len + args.max_output) // ps) * len(groups)
    num_pages = int(args.requests * pages_per_request * 1.25) + 1
    manager = KVCacheManager(groups, num_pages=num_pages, page_size=ps)
    system_prompt = [rng.randrange(32000) for _ in range(args.prompt_len // 2)]
    running: dict[int, list[int]] = {}
    budgets: dict[int, int] = {}
    next_id = 0

    def admit() -> None:
        nonlocal next_id
        request_id = next_id
        next_id += 1
        tokens = system_prompt + [rng.randrange(32000) for _ in range(args.prompt_len // 2)]
        hit = manager.lookup_prefix(request_id, tokens)
        if not manager.allocate(request_id, tokens, hit, len(tokens) - hit):
            raise SystemExit("benchmark pool too small")
        running[request_id] = tokens
        budgets[request_id] = rng.randrange(args.max_output // 4, args.max_output)

    for _ in range(args.requests):
        admit()
    # Warm up so requests are at different positions, then measure.
    step_times: list[float] = []
    for step in range(args.steps + 200):
        start = time.perf_counter()
        finished = [
            rid for rid, tokens in running.items() if len(tokens) >= budgets[rid] + args.prompt_len
        ]
        for rid in finished[: args.arrivals_per_step]:
            manager.free(rid)
            del running[rid]
        while len(running) < args.requests:
            admit()
        for rid, tokens in running.items():
            tokens.append(7)
            if not manager.allocate(rid, tokens, len(tokens) - 1, 1):
                raise SystemExit("benchmark pool too small")
        elapsed = time.perf_counter() - start
        if step >= 200:
            step_times.append(elapsed)
    mean_us = 1e6 * sum(step_times) / len(step_times)
    step_times.sort()
    median_us = 1e6 * step_times[len(step_times) // 2]
    p99_us = 1e6 * step_times[int(0.99 * len(step_times))]
    stats = manager.stats()
    print(
        f"pattern={args.pattern} requests={args.requests} page_size={ps} steps={args.steps}: "
        f"mean {mean_us:.0f} us/step ({mean_us / args.requests:.2f} us/request), "
        f"median {median_us:.0f} us/step, p99 {p99_us:.0f} us/step; admitted {next_id}, usage {stats.usage:.2f}, "
        f"prefix hit rate {stats.prefix_cache_hit_rate:.2f}"
    )
    manager.check_invariants()


if __name__ == "__main__":
    main()
