"""Start-up of an engine that compiles every bucket (``use_aot_forward``), with its compiled
steps from the on-disk cache (``compilation_cache``) and without, in fresh processes.

    .venv/bin/python benchmarks/start_up_times.py --pairs 2

Each turn is a new Python process that builds SmolLM2-135M-Instruct's engine with the default
settings and ``use_aot_forward=True`` and generates 8 greedy tokens; it reports the seconds
from before ``import esurge_core`` to the engine being ready, the buckets traced, and the
tokens. One warm-up process with the cache on fills ``$ESURGE_CACHE/xla`` first; then each
pair runs a process with ``compilation_cache=False`` and one with ``True``, so the second
loads every step from the cache. The tokens of every turn must be the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

TURN = """
import json, sys, time
start = time.perf_counter()
from esurge_core import SamplingParams, eSurge
engine = eSurge("smollm2-135m-instruct", use_aot_forward=True,
                compilation_cache=sys.argv[1] == "on")
ready = time.perf_counter() - start
out = engine.generate(["The capital of France is"],
                      SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
print(json.dumps({"seconds": ready, "buckets": engine.runner.num_compilations,
                  "tokens": list(out[0].outputs[0].token_ids)}))
engine.close()
"""


def _turn(setting: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", TURN, setting], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"the {setting} turn failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    warm = _turn("on")
    print(f"warm-up (fills the cache): {warm['seconds']:.1f} s, {warm['buckets']} buckets")
    times: dict[str, list[float]] = {"off": [], "on": []}
    for pair in range(args.pairs):
        for setting in ("off", "on"):
            turn = _turn(setting)
            if turn["tokens"] != warm["tokens"]:
                raise SystemExit(f"pair {pair}, cache {setting}: other tokens than the warm-up")
            times[setting].append(turn["seconds"])
            print(f"pair {pair}, cache {setting}: {turn['seconds']:.1f} s", flush=True)
    for setting, label in (("off", "compiling"), ("on", "from the cache")):
        print(f"{label}: median {statistics.median(times[setting]):.1f} s")


if __name__ == "__main__":
    main()
