"""Side-by-side workloads for eSurge and the engines users would pick instead, in one run.

    .venv/bin/python benchmarks/compare_peers.py --workloads W1 W2 W4 --peers esurge hf

Peers (optional dependencies of this script only, never of eSurge):
* ``esurge``: this engine (fp32 and/or bf16, ``--esurge-dtypes``);
* ``hf``: Hugging Face transformers ``generate`` with batching (PyTorch CPU), on the same
  dequantised GGUF weights;
* ``llama_cpp``: llama.cpp through ``llama-cpp-python`` on the GGUF itself (Q4_1), when
  installed (single-request workloads only: its Python API serves one sequence at a time).

Workloads (SmolLM2-135M-Instruct; random token prompts, ``ignore_eos``):
* W1 offline throughput: 64 requests, 128 prompt tokens, 128 output tokens;
* W2 single request: 128 in, 128 out: TTFT and ms per output token;
* W4 shared prefix: 64 requests sharing a 512-token prefix, 64 output tokens (eSurge with
  prefix caching on, and off for the ratio).

Results are printed as a table and, with ``--json PATH``, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

VOCAB = 49152
MODEL = "smollm2-135m-instruct"


@dataclass
class Row:
    workload: str
    peer: str
    precision: str
    metric: str
    value: float
    unit: str


def prompts(num: int, length: int, seed: int) -> list[list[int]]:
    from esurge_core.bench.workload import random_token_prompts

    return random_token_prompts(num, length, VOCAB, seed, frozenset(range(17)))


def shared_prefix_prompts(num: int, prefix_len: int, suffix_len: int, seed: int) -> list[list[int]]:
    prefix = prompts(1, prefix_len, seed)[0]
    return [prefix + tail for tail in prompts(num, suffix_len, seed + 1)]


# ------------------------------------------------------------------ eSurge


def esurge_engine(dtype: str, **overrides):
    from esurge_core import eSurge

    config = {
        "max_model_len": 768,
        "max_num_seqs": 64,
        "max_num_batched_tokens": 2048,
        "kv_cache_memory": 2 << 30,
        "dtype": dtype,
    }
    config.update(overrides)
    return eSurge(MODEL, **config)


def esurge_offline(engine, batch: list[list[int]], output_len: int, warm: list[list[int]]) -> float:
    from esurge_core.bench.throughput import run_throughput

    return run_throughput(engine, batch, output_len, warm).output_tokens_per_s


def esurge_single(engine, prompt: list[int], output_len: int) -> tuple[float, float]:
    from esurge_core import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    for _ in range(2):  # the second run is timed (the first compiles)
        start = time.perf_counter()
        first = None
        for out in engine.stream({"prompt_token_ids": prompt}, params):
            if first is None and out.outputs[0].delta_token_ids:
                first = time.perf_counter() - start
        total = time.perf_counter() - start
        prompt = [(t + 1) % VOCAB for t in prompt]  # no prefix-cache hit on the timed run
    return first * 1000, (total - first) * 1000 / (output_len - 1)


# ------------------------------------------------------------------ HF transformers


def hf_model(dtype: str):
    import torch
    import transformers

    from esurge_core.packaged_models import resolve_model

    path = resolve_model(MODEL)
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch_dtype, local_files_only=True
    )
    return model.eval()


def hf_offline(model, batch: list[list[int]], output_len: int) -> float:
    import torch

    ids = torch.tensor(batch)
    with torch.no_grad():
        model.generate(ids[:2], max_new_tokens=4, min_new_tokens=4, do_sample=False)
        start = time.perf_counter()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=output_len,
            min_new_tokens=output_len,
            do_sample=False,
            pad_token_id=0,
        )
        elapsed = time.perf_counter() - start
    return (out.shape[1] - ids.shape[1]) * ids.shape[0] / elapsed


def hf_single(model, prompt: list[int], output_len: int) -> tuple[float, float]:
    import torch

    ids = torch.tensor([prompt])
    with torch.no_grad():
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False)
        total = time.perf_counter() - start
    return ttft * 1000, (total - ttft) * 1000 / (output_len - 1)


# ------------------------------------------------------------------ llama.cpp


def llama_cpp_single(prompt: list[int], output_len: int) -> tuple[float, float] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    from esurge_core.packaged_models import resolve_model

    llm = llama_cpp.Llama(
        str(resolve_model(MODEL)), n_ctx=1024, n_threads=os.cpu_count(), verbose=False
    )
    start = time.perf_counter()
    first = None
    for index, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1, reset=True)):
        if first is None:
            first = time.perf_counter() - start
        if index + 1 >= output_len:
            break
    total = time.perf_counter() - start
    return first * 1000, (total - first) * 1000 / (output_len - 1)


# ------------------------------------------------------------------ driver


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    w1 = prompts(64, 128, 0)
    w1_warm = prompts(64, 128, 100)
    w2 = prompts(1, 128, 1)[0]
    w4 = shared_prefix_prompts(64, 512, 16, 2)
    w4_warm = shared_prefix_prompts(64, 512, 16, 200)

    def add(workload: str, peer: str, precision: str, metric: str, value: float, unit: str):
        rows.append(Row(workload, peer, precision, metric, round(value, 2), unit))
        print(
            f"{workload:3s} {peer:10s} {precision:9s} {metric:22s} {value:10.2f} {unit}", flush=True
        )

    if "esurge" in args.peers:
        for dtype in args.esurge_dtypes:
            engine = esurge_engine(dtype)
            if "W1" in args.workloads:
                add(
                    "W1",
                    "esurge",
                    dtype,
                    "output tokens/s",
                    esurge_offline(engine, w1, 128, w1_warm),
                    "tok/s",
                )
            if "W2" in args.workloads:
                ttft, tpot = esurge_single(engine, w2, 128)
                add("W2", "esurge", dtype, "TTFT", ttft, "ms")
                add("W2", "esurge", dtype, "per output token", tpot, "ms")
            if "W4" in args.workloads:
                add(
                    "W4",
                    "esurge",
                    dtype,
                    "output tokens/s (cache on)",
                    esurge_offline(engine, w4, 64, w4_warm),
                    "tok/s",
                )
            engine.close()
            if "W4" in args.workloads:
                off = esurge_engine(dtype, enable_prefix_caching=False)
                add(
                    "W4",
                    "esurge",
                    dtype,
                    "output tokens/s (cache off)",
                    esurge_offline(off, w4, 64, w4_warm),
                    "tok/s",
                )
                off.close()
    if "hf" in args.peers:
        for dtype in args.hf_dtypes:
            model = hf_model(dtype)
            if "W1" in args.workloads:
                add("W1", "hf", dtype, "output tokens/s", hf_offline(model, w1, 128), "tok/s")
            if "W2" in args.workloads:
                ttft, tpot = hf_single(model, w2, 128)
                add("W2", "hf", dtype, "TTFT", ttft, "ms")
                add("W2", "hf", dtype, "per output token", tpot, "ms")
            del model
    if "llama_cpp" in args.peers and "W2" in args.workloads:
        result = llama_cpp_single(w2, 128)
        if result is None:
            print("llama_cpp: llama-cpp-python is not installed; skipped", flush=True)
        else:
            add("W2", "llama_cpp", "Q4_1", "TTFT", result[0], "ms")
            add("W2", "llama_cpp", "Q4_1", "per output token", result[1], "ms")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", nargs="+", default=["W1", "W2", "W4"], choices=["W1", "W2", "W4"]
    )
    parser.add_argument(
        "--peers", nargs="+", default=["esurge", "hf"], choices=["esurge", "hf", "llama_cpp"]
    )
    parser.add_argument(
        "--esurge-dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"]
    )
    parser.add_argument(
        "--hf-dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"]
    )
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    rows = run(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "date": started,
                    "machine": f"{platform.machine()} {os.cpu_count()} cores",
                    "numpy": np.__version__,
                    "rows": [row.__dict__ for row in rows],
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
