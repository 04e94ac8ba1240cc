"""Median time of the compiled decode step at given batch sizes, for one engine configuration.

    .venv/bin/python benchmarks/decode_step_times.py --matmul cpu --batches 1 4 8 16
    .venv/bin/python benchmarks/decode_step_times.py --matmul xla --batches 1 4 8 16

SmolLM2-135M-Instruct with bf16 weights and KV cache (fp32 activations), as W1-W4 run it.
For each batch size: one warm-up generation (compiles the buckets), then a timed one over
other prompts (128 prompt tokens, 128 output tokens each, as in W1) in which every call of the compiled
step is timed to completion; prints the median time and page faults (minor) over the decode
steps. Starts with eSurge's malloc settings (``esurge_core.host_malloc``;
``ESURGE_TUNE_MALLOC=0`` without). Compare backends in runs made one after the other on a
quiet machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
from peers.esurge_peer import workload_engine

from esurge_core import SamplingParams
from esurge_core.host_malloc import malloc_is_tuned, reexec_with_tuned_malloc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matmul", default="auto", help="matmul backend (default: auto)")
    parser.add_argument("--attention", default="auto", help="attention backend (default: auto)")
    parser.add_argument("--page-size", type=int, default=16, help="KV page size (default: 16)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--output-len", type=int, default=128)
    args = parser.parse_args()
    reexec_with_tuned_malloc()
    engine = workload_engine(
        max_num_seqs=max(64, *args.batches),
        page_size=args.page_size,
        matmul=args.matmul,
        attention=args.attention,
    )
    step = engine.runner._step
    malloc = "tuned" if malloc_is_tuned() else "default"
    params = SamplingParams(temperature=0, max_tokens=args.output_len, ignore_eos=True)
    try:
        for batch in args.batches:
            prompts = [{"prompt_token_ids": list(range(100 + i, 228 + i))} for i in range(batch)]
            engine.generate(prompts, params)
            times: list[float] = []
            faults: list[int] = []

            def timed(*step_args, times=times, faults=faults):
                faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                out = jax.block_until_ready(step(*step_args))
                times.append(time.perf_counter() - start)
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
                return out

            engine.runner._step = timed
            prompts = [{"prompt_token_ids": list(range(1000 + i, 1128 + i))} for i in range(batch)]
            engine.generate(prompts, params)
            engine.runner._step = step
            decode = times[-(args.output_len - 1) :]  # the steps after the prefill
            decode_faults = faults[-(args.output_len - 1) :]
            print(
                f"matmul {engine.matmul_backend_name} page size {args.page_size} malloc {malloc} "
                f"batch {batch}: median decode step {statistics.median(decode) * 1e3:.2f} ms, "
                f"{statistics.median(decode_faults):.0f} page faults",
                flush=True,
            )
    finally:
        engine.close()


if __name__ == "__main__":
    main()
