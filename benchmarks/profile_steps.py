"""Where the compiled steps of a generation spend their time, from a ``jax.profiler`` trace.

    .venv/bin/python benchmarks/profile_steps.py --batch 64 --output-len 16

SmolLM2-135M-Instruct with bf16 weights and KV cache, as W1-W4 run it. Warm-up generations
until one compiles nothing, then a traced one over other prompts (``--prompt-len``
tokens each). For every execution of the compiled step the trace holds the thunks XLA ran,
each named by its HLO op; this prints one line per step: its wall span and the thread time
of each kind of thunk (``ffi_call``: the plugins' kernels; ``ynn_fusion`` / ``*_fusion``:
XLA's own code), largest first. A kind that dominates a step where it should not is the
first thing to look at (a prefill step spending its time in ``ynn_fusion`` meant XLA's dot,
not the packed kernel, computed its products: docs/PERFORMANCE.md step 19). ``--ops N``
also prints the N slowest ops of the median-length step. The trace stays in ``--trace-dir``
for Perfetto.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
from pathlib import Path

import jax
from peers.esurge_peer import warm_up, workload_engine

from esurge_core import SamplingParams
from esurge_core.host_malloc import reexec_with_tuned_malloc

STEP_MODULE = "jit_step"


def _step_events(trace_dir: Path) -> dict[str, list[dict]]:
    """Thunk events of each execution of the compiled step, by run id (newest trace)."""
    trace_file = max(trace_dir.rglob("*.trace.json.gz"), key=lambda f: f.stat().st_mtime)
    events = json.loads(gzip.decompress(trace_file.read_bytes()))["traceEvents"]
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    for event in events:
        args = event.get("args", {})
        if (
            event.get("ph") == "X"
            and args.get("hlo_module") == STEP_MODULE
            and "run_id" in args
            and not event["name"].startswith("ThunkExecutor")
        ):
            runs[args["run_id"]].append(event)
    return runs


def _kind(op_name: str) -> str:
    return re.sub(r"\.\d+$", "", op_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=16)
    parser.add_argument("--matmul", default="auto")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--ops", type=int, default=0, help="print the N slowest ops of a step")
    parser.add_argument("--trace-dir", type=Path, default=Path("/tmp/esurge_profile_steps"))
    args = parser.parse_args()
    reexec_with_tuned_malloc()
    engine = workload_engine(
        max_num_seqs=max(64, args.batch), matmul=args.matmul, attention=args.attention
    )
    params = SamplingParams(temperature=0, max_tokens=args.output_len, ignore_eos=True)

    def prompts(first: int) -> list[list[int]]:
        return [list(range(first + i, first + i + args.prompt_len)) for i in range(args.batch)]

    try:
        # Until a run compiles nothing, so the traced one compiles nothing either
        # (docs/PERFORMANCE.md steps 20-21).
        warm_up(engine, prompts(10_000), params)
        compiled = engine.runner.num_compilations
        with jax.profiler.trace(str(args.trace_dir), create_perfetto_trace=True):
            engine.generate([{"prompt_token_ids": p} for p in prompts(1000)], params)
        recompiled = engine.runner.num_compilations - compiled
    finally:
        engine.close()
    if recompiled:
        print(f"note: {recompiled} compilation(s) ran inside the trace")

    runs = _step_events(args.trace_dir)
    spans = {}
    for run_id, events in sorted(runs.items(), key=lambda r: min(e["ts"] for e in r[1])):
        start = min(e["ts"] for e in events)
        spans[run_id] = (max(e["ts"] + e["dur"] for e in events) - start) / 1e3
        by_kind: collections.Counter[str] = collections.Counter()
        for event in events:
            by_kind[_kind(event["args"]["hlo_op"])] += event["dur"] / 1e3
        parts = ", ".join(f"{kind} {ms:.1f}" for kind, ms in by_kind.most_common(6))
        print(f"step span {spans[run_id]:9.1f} ms | thread ms: {parts}")
    if args.ops and spans:
        median = statistics.median_low(spans.values())
        run_id = next(r for r, span in spans.items() if span == median)
        durations: collections.Counter[str] = collections.Counter()
        for event in runs[run_id]:
            durations[event["args"]["hlo_op"]] += event["dur"] / 1e3
        print(f"slowest ops of a {median:.1f} ms step:")
        for op, ms in durations.most_common(args.ops):
            print(f"  {ms:8.3f} ms {op}")
    print(f"trace: {args.trace_dir}")


if __name__ == "__main__":
    main()
