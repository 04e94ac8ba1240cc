"""eSurge itself as a peer of the benchmark (issue 9), with the same contract as the others.

    .venv/bin/python benchmarks/peers/esurge_peer.py offline --workload-file W.json --out O.json

Precisions: ``float32``; ``bf16-weights`` (bfloat16 weights, float32 activations and KV cache:
``param_dtype="bfloat16"``); ``bf16-weights-kv`` (bfloat16 weights and KV cache, float32
activations); ``bfloat16`` (weights, activations and KV cache in bf16). A precision may
be followed by engine choices, e.g. ``bf16-weights-kv,matmul=xla`` (keys: ``attention``,
``matmul``, ``max_num_batched_tokens``, ``page_size``), or the process choice
``malloc=default`` (start without ``esurge_core.host_malloc``'s settings), ``pack=off``
(the ``cpu`` matmul backend keeps the weights as loaded) or ``greedy_head=off`` (it computes
every logit of all-greedy steps), to measure one change against its baseline in the same run. The
model is the packaged SmolLM2 GGUF, dequantised at load (the same values as the peers' HF
folder). Workloads:

* W1 / W4: ``eSurge.generate`` over all prompts (``ignore_eos``), after warm-up runs until
  one compiles nothing (see ``_warm_up``); W4 runs with prefix caching on, then off;
* W2: one streamed request after a warm request with another prompt: TTFT and time per
  output token;
* W3 (server mode): :func:`server_command` starts ``esurge serve``; :func:`warm_up_server`
  runs the warm prompts through it until a pass compiles nothing, and
  :func:`server_compilations` reads its compilation count, recorded for the timed run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PEER = "esurge"
#: Most warm-up runs before a timed W1 / W4 run (each with fresh prompts of the same shapes).
MAX_WARM_UP_RUNS = 4
MODEL = "smollm2-135m-instruct"
SERVED_MODEL = MODEL
ENGINE = {
    "max_model_len": 1024,
    "max_num_seqs": 64,
    "max_num_batched_tokens": 2048,
    "kv_cache_memory": 2 << 30,
}


def dtype_options(precision: str) -> dict[str, str]:
    """Engine keywords of a precision name."""
    if precision == "bf16-weights":
        return {"dtype": "float32", "param_dtype": "bfloat16"}
    if precision == "bf16-weights-kv":
        return {"dtype": "float32", "param_dtype": "bfloat16", "kv_cache_dtype": "bfloat16"}
    if precision in ("float32", "bfloat16"):
        return {"dtype": precision}
    raise ValueError(
        f"precision must be float32, bf16-weights, bf16-weights-kv or bfloat16, got {precision!r}"
    )


def on_off(value: str) -> bool:
    """``on`` -> True, ``off`` -> False."""
    if value not in ("on", "off"):
        raise ValueError(f"must be on or off, got {value!r}")
    return value == "on"


#: Engine keywords a setting may name after its precision, and the type of each value.
CHOICE_KEYS = {
    "attention": str,
    "matmul": str,
    "max_num_batched_tokens": int,
    "page_size": int,
    "async_scheduling": on_off,
    "engine_thread_nice": int,
    "num_speculative_tokens": int,
    "speculative_max_seqs": int,
    "prompt_lookup_max": int,
    "prompt_lookup_min": int,
}
#: Process choices a setting may name (not engine keywords), and their allowed values:
#: ``malloc=default`` starts the engine without eSurge's malloc settings
#: (``esurge_core.host_malloc``), to measure them against the default ``malloc=tuned``;
#: ``pack=off`` sets ``ESURGE_CPU_PACK_WEIGHTS=0`` (weights not packed at load);
#: ``greedy_head=off`` sets ``ESURGE_CPU_GREEDY_HEAD=0`` (no int8 screen of the LM head).
PACK_WEIGHTS_VARIABLE = "ESURGE_CPU_PACK_WEIGHTS"
GREEDY_HEAD_VARIABLE = "ESURGE_CPU_GREEDY_HEAD"
PROCESS_CHOICES = {
    "malloc": ("tuned", "default"),
    "pack": ("on", "off"),
    "greedy_head": ("on", "off"),
}


def _choices(setting: str) -> tuple[str, dict[str, str | int], dict[str, str]]:
    """``precision[,key=value...]`` split into the precision, engine and process choices."""
    precision, *choices = setting.split(",")
    engine: dict[str, str | int] = {}
    process: dict[str, str] = {}
    for choice in choices:
        key, sep, value = choice.partition("=")
        if key in PROCESS_CHOICES and sep and value in PROCESS_CHOICES[key]:
            process[key] = value
            continue
        if key in PROCESS_CHOICES:
            raise ValueError(
                f"process choice {choice!r}: {key} must be one of {list(PROCESS_CHOICES[key])}"
            )
        if key not in CHOICE_KEYS or not sep or not value:
            raise ValueError(
                f"engine choice must be KEY=VALUE with KEY one of "
                f"{sorted([*CHOICE_KEYS, *PROCESS_CHOICES])}, got {choice!r}"
            )
        try:
            engine[key] = CHOICE_KEYS[key](value)
        except ValueError as exc:
            raise ValueError(f"engine choice {choice!r}: {exc}") from exc
    return precision, engine, process


def engine_options(setting: str) -> dict[str, str | int]:
    """Engine keywords of ``precision[,key=value...]`` (keys from ``CHOICE_KEYS``)."""
    precision, engine, _ = _choices(setting)
    return {**dtype_options(precision), **engine}


def process_env(setting: str) -> dict[str, str]:
    """Environment variables the setting's process choices ask for."""
    _, _, process = _choices(setting)
    env = {}
    if process.get("malloc") == "default":
        from esurge_core.host_malloc import OPT_OUT_VARIABLE

        env[OPT_OUT_VARIABLE] = "0"
    if process.get("pack") == "off":
        env[PACK_WEIGHTS_VARIABLE] = "0"
    if process.get("greedy_head") == "off":
        env[GREEDY_HEAD_VARIABLE] = "0"
    return env


def server_command(workload_file: str, port: int, precision: str) -> tuple[list[str], dict]:
    """argv and extra environment that start ``esurge serve`` on 127.0.0.1:port."""
    options = engine_options(precision)
    budget = options.pop("max_num_batched_tokens", ENGINE["max_num_batched_tokens"])
    argv = [
        str(Path(sys.executable).with_name("esurge")),
        "serve",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-num-seqs",
        "32",
        "--max-model-len",
        str(ENGINE["max_model_len"]),
        "--max-num-batched-tokens",
        str(budget),
        "--kv-cache-memory",
        str(ENGINE["kv_cache_memory"]),
        "--log-level",
        "warning",
    ]
    for key, value in options.items():
        if isinstance(value, bool):  # an on/off choice
            argv.append(f"--{'' if value else 'no-'}{key.replace('_', '-')}")
        else:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv, process_env(precision)


def workload_engine(precision: str = "bf16-weights-kv", **overrides):
    """The engine of the W1-W4 workloads (``ENGINE`` settings) in ``precision``;
    ``overrides`` are further engine keywords (the step benchmarks use it too)."""
    from esurge_core import eSurge

    return eSurge(MODEL, **{**ENGINE, **engine_options(precision), **overrides})


def _relabelled(prompts: list[list[int]], shift: int) -> list[list[int]]:
    """``prompts`` with each token id replaced by the id ``shift`` places later among the ids
    they use: prompts of the same lengths that share exactly what the originals share (a
    common prefix stays common), none of whose pages is in the prefix cache yet."""
    ids = sorted({t for p in prompts for t in p})
    successor = {t: ids[(i + shift) % len(ids)] for i, t in enumerate(ids)}
    return [[successor[t] for t in p] for p in prompts]


def warm_up(engine, prompts: list[list[int]], params) -> None:
    """Run relabelled copies of the warm prompts until a run compiles nothing (at most
    ``MAX_WARM_UP_RUNS``): steady-state throughput is what W1 / W4 measure.

    Before ``generate`` queued its prompts together (docs/PERFORMANCE.md step 21) a timed
    W1 run after a single warm run compiled two more step shapes, seconds inside the timed
    region; the compilations of each timed run are recorded in the result either way.
    """
    _warm_until_nothing_compiles(
        lambda batch: engine.generate([{"prompt_token_ids": p} for p in batch], params),
        lambda: engine.runner.num_compilations,
        prompts,
    )


def _warm_until_nothing_compiles(run, compilations, prompts: list[list[int]]) -> None:
    """``run`` over relabelled copies of ``prompts`` until ``compilations()`` stays the same
    across a run (at most ``MAX_WARM_UP_RUNS`` runs)."""
    for shift in range(MAX_WARM_UP_RUNS):
        before = compilations()
        run(_relabelled(prompts, shift))
        if compilations() == before:
            return


def server_compilations(base_url: str) -> int:
    """Step compilations so far of the ``esurge serve`` at ``base_url`` (its ``/metrics``)."""
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("esurge:num_compilations_total"):
            return int(float(line.rsplit(" ", 1)[1]))
    raise RuntimeError(f"{base_url}/metrics has no esurge:num_compilations_total")


def warm_up_server(base_url: str, run, prompts: list[list[int]]) -> None:
    """``run`` (one pass of concurrent streaming requests) over relabelled copies of the warm
    prompts until a pass compiles nothing (at most ``MAX_WARM_UP_RUNS``).

    Which step shapes an online run reaches depends on how its requests happen to arrive, so
    one warm pass left some to compile inside the timed run (seconds each, in its TTFT)."""
    _warm_until_nothing_compiles(run, lambda: server_compilations(base_url), prompts)


def _throughput(engine, spec: dict) -> tuple[float, int]:
    """Output tokens/s of one ``generate`` over the prompts after ``warm_up``, and how many
    step shapes were compiled during it (0 unless the warm-up ran out of runs).

    The warm prompts differ from the timed ones, so the timed run finds in the prefix cache
    only what the workload itself shares.
    """
    from esurge_core import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=spec["output_len"], ignore_eos=True)
    warm_up(engine, spec["warm"], params)
    compiled = engine.runner.num_compilations
    start = time.perf_counter()
    outputs = engine.generate([{"prompt_token_ids": p} for p in spec["prompts"]], params)
    elapsed = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    expected = spec["output_len"] * len(spec["prompts"])
    if generated != expected:
        raise RuntimeError(f"generated {generated} tokens, expected {expected}")
    return generated / elapsed, engine.runner.num_compilations - compiled


def timed_stream(engine, prompt: list[int], params) -> tuple[float, float]:
    """Stream ``prompt`` through ``engine``; W2's TTFT and time per output token after the
    first (ms), for ``params.max_tokens`` tokens (at least 2)."""
    ttft, per_token, _ = timed_stream_tokens(engine, prompt, params)
    return ttft, per_token


def timed_stream_tokens(engine, prompt: list[int], params) -> tuple[float, float, list[int]]:
    """``timed_stream``'s TTFT and time per output token after the first (ms, over the
    tokens the stream gave, at least 2), and those tokens."""
    start = time.perf_counter()
    first = None
    last = None
    for out in engine.stream({"prompt_token_ids": prompt}, params):
        if first is None and out.outputs[0].delta_token_ids:
            first = time.perf_counter() - start
        last = out
    total = time.perf_counter() - start
    tokens = list(last.outputs[0].token_ids)
    return first * 1000, (total - first) * 1000 / (len(tokens) - 1), tokens


def _single(engine, spec: dict) -> tuple[float, float, int]:
    """W2: TTFT and time per output token of one stream after a warm one with another
    prompt, and the step shapes compiled during the timed stream (0 unless the warm one left
    some to compile)."""
    from esurge_core import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=spec["output_len"], ignore_eos=True)
    timed_stream(engine, spec["warm"], params)
    compiled = engine.runner.num_compilations
    ttft, per_token = timed_stream(engine, spec["prompt"], params)
    return ttft, per_token, engine.runner.num_compilations - compiled


def offline(workload_file: Path, out: Path) -> dict:
    """Run the workloads named in ``workload_file`` and write the result rows to ``out``."""
    from esurge_core.version import __version__

    workload = json.loads(workload_file.read_text())
    precision = workload.get("precision", "float32")
    specs = workload["workloads"]
    rows = []

    def add(name: str, metric: str, value: float, unit: str) -> None:
        rows.append(
            {
                "workload": name,
                "metric": metric,
                "value": round(value, 2),
                "unit": unit,
                "precision": precision,
            }
        )
        print(f"{PEER} {name} {precision} {metric}: {value:.2f} {unit}", flush=True)

    from esurge_core.host_malloc import malloc_is_tuned

    malloc = "tuned" if malloc_is_tuned() else "default"
    packing = "off" if os.environ.get(PACK_WEIGHTS_VARIABLE) == "0" else "on"
    greedy_head = "off" if os.environ.get(GREEDY_HEAD_VARIABLE) == "0" else "on"
    engine = workload_engine(precision)
    backends = f"attention {engine.attention_backend_name}, matmul {engine.matmul_backend_name}"
    timed_compilations: dict[str, int] = {}
    if "W1" in specs:
        tokens_per_second, timed_compilations["W1"] = _throughput(engine, specs["W1"])
        add("W1", "output tokens/s", tokens_per_second, "tok/s")
    if "W2" in specs:
        ttft, per_token, timed_compilations["W2"] = _single(engine, specs["W2"])
        add("W2", "TTFT", ttft, "ms")
        add("W2", "per output token", per_token, "ms")
    if "W4" in specs:
        tokens_per_second, timed_compilations["W4"] = _throughput(engine, specs["W4"])
        add("W4", "output tokens/s", tokens_per_second, "tok/s")
    engine.close()
    if "W4" in specs:
        off = workload_engine(precision, enable_prefix_caching=False)
        tokens_per_second, timed_compilations["W4 off"] = _throughput(off, specs["W4"])
        add("W4", "output tokens/s (prefix caching off)", tokens_per_second, "tok/s")
        off.close()
    result = {
        "peer": PEER,
        "version": __version__,
        "settings": (
            f"{engine_options(precision)}, {backends}, malloc {malloc}, "
            f"weight packing {packing}, greedy head screen {greedy_head}, "
            + json.dumps(ENGINE)
            + ", "
            "prefix caching on (W4 also off), greedy, ignore_eos; warm prompts run first "
            "(W1 / W4 until a run compiles nothing); step compilations in timed runs: "
            + json.dumps(timed_compilations)
        ),
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    """Command line: ``offline --workload-file F --out OUT.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("offline", help="run W1/W2/W4 from the workload file")
    run.add_argument("--workload-file", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from esurge_core.host_malloc import reexec_with_tuned_malloc

    precision = json.loads(args.workload_file.read_text()).get("precision", "float32")
    os.environ.update(process_env(precision))
    reexec_with_tuned_malloc()
    offline(args.workload_file, args.out)


if __name__ == "__main__":
    main()
