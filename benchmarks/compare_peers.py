"""eSurge side by side with the engines users would pick instead: same machine, same weights,
same workloads, one after the other in one invocation (issue 9).

    .venv/bin/python benchmarks/compare_peers.py --out results.json \\
        --run esurge:float32 esurge:bf16-weights hf:float32 hf:bfloat16 \\
              vllm:bfloat16 llama_cpp:F16 llama_cpp:Q4_1 easydel:float32

Every peer runs in its own virtualenv as a subprocess (``benchmarks/peers/<peer>_peer.py``,
set up by ``benchmarks/peers/setup_<peer>.sh``); the interpreters default to the folders those
scripts create and can be overridden with ``--python PEER=PATH``. All peers compute on the same
weights: the packaged SmolLM2-135M-Instruct Q4_1 GGUF, dequantised (eSurge loads the GGUF,
HF / vLLM / EasyDeL the Hugging Face folder ``benchmarks/peers/build_hf_folder.py`` writes from
it, llama.cpp the GGUF or an F16 GGUF ``llama-quantize`` made from it).

Workloads (random token prompts without special tokens, greedy, ``ignore_eos``):

* W1 offline throughput: 64 requests, 128 prompt tokens, 128 output tokens;
* W2 single request: 128 in, 128 out: TTFT and ms per output token;
* W3 online: each peer's OpenAI-compatible server on 127.0.0.1, 64 streaming requests
  (128 in, 128 out) from 32 concurrent clients (``esurge_core.bench.serve``): TTFT p50/p99,
  ITL p50, output tokens/s;
* W4 shared prefix: 64 requests sharing a 512-token prefix (+16 own tokens), 64 output
  tokens, prefix caching on (eSurge also off, for the ratio).

Each peer warms up on prompts different from the timed ones (compilation, graph capture).
The rows (and each peer's version and settings) are written as JSON to ``--out``; a Markdown
table of the results, with eSurge's ratio to each peer, is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
VOCAB = 49152
SPECIAL_IDS = frozenset(range(17))
DEFAULT_PYTHON = {
    "esurge": sys.executable,
    "hf": sys.executable,
    "vllm": "/work/peers/vllm/bin/python",
    "llama_cpp": sys.executable,
    "easydel": "/work/peers/easydel/bin/python",
}
SERVER_PEERS = ("esurge", "vllm", "llama_cpp", "easydel")
W3_REQUESTS, W3_CONCURRENCY = 64, 32


def prompts(num: int, length: int, seed: int) -> list[list[int]]:
    from esurge_core.bench.workload import random_token_prompts

    return random_token_prompts(num, length, VOCAB, seed, SPECIAL_IDS)


def shared_prefix(num: int, prefix_len: int, suffix_len: int, seed: int) -> list[list[int]]:
    prefix = prompts(1, prefix_len, seed)[0]
    return [prefix + tail for tail in prompts(num, suffix_len, seed + 1)]


def workload_specs(names: list[str]) -> dict:
    specs = {
        "W1": {"prompts": prompts(64, 128, 0), "warm": prompts(64, 128, 100), "output_len": 128},
        "W2": {"prompt": prompts(1, 128, 1)[0], "warm": prompts(1, 128, 101)[0], "output_len": 128},
        "W3": {"prompts": prompts(W3_REQUESTS, 128, 3), "warm": prompts(W3_REQUESTS, 128, 103)},
        "W4": {
            "prompts": shared_prefix(64, 512, 16, 2),
            "warm": shared_prefix(64, 512, 16, 200),
            "output_len": 64,
        },
    }
    specs["W3"]["output_len"] = 128
    return {name: specs[name] for name in names}


def write_workload_file(
    folder: Path, tag: str, names: list[str], precision: str, hf_folder: Path
) -> Path:
    """The peer contract's input file for the workloads ``names`` at ``precision``."""
    from esurge_core.packaged_models import resolve_model

    path = folder / f"{tag}.json"
    path.write_text(
        json.dumps(
            {
                "gguf": str(resolve_model("smollm2-135m-instruct")),
                "hf_folder": str(hf_folder),
                "workloads": workload_specs(names),
                "precision": precision,
            }
        )
    )
    return path


# ------------------------------------------------------------------ offline (W1, W2, W4)


def run_offline(peer: str, python: str, workload_file: Path, folder: Path) -> dict | None:
    out = folder / f"{workload_file.stem}-result.json"
    command = [python, str(PEERS_DIR / f"{peer}_peer.py"), "offline"]
    command += ["--workload-file", str(workload_file), "--out", str(out)]
    print(f"--- {peer}: {' '.join(command)}", flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0 or not out.exists():
        print(f"!!! {peer} offline run failed (exit {result.returncode})", flush=True)
        return None
    return json.loads(out.read_text())


# ------------------------------------------------------------------ online (W3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base_url: str, process: subprocess.Popen, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(base_url + "/v1/models", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"server not ready after {timeout_s:.0f} s")


def load_peer_module(peer: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{peer}_peer", PEERS_DIR / f"{peer}_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_online(peer: str, precision: str, workload_file: Path) -> list[dict]:
    from esurge_core.bench.serve import run_serve_benchmark

    module = load_peer_module(peer)
    port = free_port()
    argv, env = module.server_command(str(workload_file), port, precision)
    base_url = f"http://127.0.0.1:{port}"
    spec = json.loads(workload_file.read_text())["workloads"]["W3"]
    print(f"--- {peer} W3 server: {' '.join(argv)}", flush=True)
    process = subprocess.Popen(argv, env={**os.environ, **env}, start_new_session=True)
    try:
        wait_ready(base_url, process)
        model = module.SERVED_MODEL

        def bench(batch: list[list[int]]):
            return asyncio.run(
                run_serve_benchmark(
                    base_url, model, batch, spec["output_len"], max_concurrency=W3_CONCURRENCY
                )
            )

        # Compile / capture outside the timed run (a peer may warm up until nothing compiles).
        warm_up = getattr(module, "warm_up_server", None)
        if warm_up is None:
            bench(spec["warm"])
        else:
            warm_up(base_url, bench, spec["warm"])
        compilations = getattr(module, "server_compilations", None)
        compiled_before = None if compilations is None else compilations(base_url)
        result = bench(spec["prompts"])
        compiled = None if compilations is None else compilations(base_url) - compiled_before
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if result.failed:
        print(f"!!! {peer} W3: {result.failed} requests failed", flush=True)
    rows = [
        ("output tokens/s", result.output_tokens_per_s, "tok/s"),
        ("TTFT p50", result.ttft_ms["p50"], "ms"),
        ("TTFT p99", result.ttft_ms["p99"], "ms"),
        ("ITL p50", result.itl_ms["p50"], "ms"),
        ("requests failed", float(result.failed), "requests"),
    ]
    if compiled is not None:
        rows.append(("step compilations in the timed run", float(compiled), "compilations"))
    for metric, value, unit in rows:
        print(f"{peer} W3 {precision} {metric}: {value:.2f} {unit}", flush=True)
    return [
        {"workload": "W3", "metric": m, "value": round(v, 2), "unit": u, "precision": precision}
        for m, v, u in rows
    ]


# ------------------------------------------------------------------ report


def markdown(results: list[dict]) -> str:
    """One table: every row of every peer, with eSurge's best ratio against it."""
    lower_is_better = {"ms"}
    best_esurge: dict[tuple[str, str], float] = {}
    for result in results:
        if result["peer"] != "esurge":
            continue
        for row in result["rows"]:
            key = (row["workload"], row["metric"])
            better = min if row["unit"] in lower_is_better else max
            best_esurge[key] = better(best_esurge.get(key, row["value"]), row["value"])
    lines = [
        "| workload | metric | engine | precision | value | best eSurge / engine |",
        "|---|---|---|---|---|---|",
    ]
    for result in sorted(results, key=lambda r: r["peer"] != "esurge"):
        for row in result["rows"]:
            key = (row["workload"], row["metric"])
            ratio = ""
            if result["peer"] != "esurge" and key in best_esurge and row["value"]:
                mine = best_esurge[key]
                value = (
                    row["value"] / mine if row["unit"] in lower_is_better else mine / row["value"]
                )
                ratio = f"{value:.2f}x"
            lines.append(
                f"| {row['workload']} | {row['metric']} | {result['peer']} | "
                f"{row['precision']} | {row['value']} {row['unit']} | {ratio} |"
            )
    header, body = lines[:2], lines[2:]
    body.sort(key=lambda line: (line.split("|")[1], line.split("|")[2]))
    return "\n".join(header + body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run",
        nargs="+",
        default=["esurge:float32", "esurge:bf16-weights", "hf:float32"],
        help="PEER:PRECISION pairs, run in this order",
    )
    parser.add_argument(
        "--workloads", nargs="+", default=["W1", "W2", "W3", "W4"], choices=["W1", "W2", "W3", "W4"]
    )
    parser.add_argument("--python", nargs="*", default=[], help="PEER=INTERPRETER overrides")
    parser.add_argument("--hf-folder", type=Path, default=Path("/work/peers/smollm2-hf"))
    parser.add_argument("--out", type=Path, default=None, help="write every result here (JSON)")
    parser.add_argument(
        "--table-from",
        nargs="+",
        type=Path,
        default=None,
        help="print the table of earlier --out files (one table over all of them) and exit",
    )
    args = parser.parse_args()
    if args.table_from:
        results = [r for path in args.table_from for r in json.loads(path.read_text())["results"]]
        print(markdown(results))
        return
    pythons = dict(DEFAULT_PYTHON)
    pythons.update(dict(item.split("=", 1) for item in args.python))
    if not (args.hf_folder / "model.safetensors").exists():
        sys.path.insert(0, str(PEERS_DIR))
        from build_hf_folder import build_hf_folder

        build_hf_folder(args.hf_folder)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for item in args.run:
            peer, precision = item.split(":", 1)
            offline_names = [w for w in args.workloads if w != "W3"]
            result = {"peer": peer, "precision": precision, "version": "", "settings": ""}
            result["rows"] = []
            if offline_names:
                offline_file = write_workload_file(
                    folder, f"{peer}-{precision}-offline", offline_names, precision, args.hf_folder
                )
                found = run_offline(peer, pythons[peer], offline_file, folder)
                if found:
                    result.update({k: found[k] for k in ("version", "settings")})
                    result["rows"] += found["rows"]
            if "W3" in args.workloads and peer in SERVER_PEERS:
                try:
                    online_file = write_workload_file(
                        folder, f"{peer}-{precision}-online", ["W3"], precision, args.hf_folder
                    )
                    result["rows"] += run_online(peer, precision, online_file)
                except Exception as exc:  # a failed peer must not lose the others' results
                    print(f"!!! {peer} W3 failed: {exc!r}", flush=True)
            results.append(result)
            if args.out:
                args.out.write_text(json.dumps(report(started, results), indent=2))
    print(markdown(results))


def _cpu_model() -> str:
    """The CPU's name, family and model (a VM may report only "AMD EPYC"; the family and model
    number tell the generation apart, e.g. family 25 Zen 3/4, family 26 Zen 5)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown CPU"
    return (
        f"{fields.get('model name', 'unknown CPU')}, family {fields.get('cpu family', '?')} "
        f"model {fields.get('model', '?')}"
    )


def report(started: str, results: list[dict]) -> dict:
    return {
        "date": started,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs ({_cpu_model()}), "
        f"{platform.platform()}",
        "results": results,
    }


if __name__ == "__main__":
    main()
