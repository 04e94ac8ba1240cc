"""The peer benchmark's eSurge side on a tiny workload, and its report (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_esurge_peer_runs_every_offline_workload_with_exact_lengths(tmp_path):
    peer = _module(BENCHMARKS / "peers" / "esurge_peer.py")
    prompts = [[100 + i, 200 + i, 300 + i, 400 + i] for i in range(3)]
    warm = [[500 + i, 600 + i, 700 + i, 800 + i] for i in range(3)]
    workload = {
        "precision": "bf16-weights-kv",
        "workloads": {
            "W1": {"prompts": prompts, "warm": warm, "output_len": 3},
            "W2": {"prompt": prompts[0], "warm": warm[0], "output_len": 3},
            "W4": {"prompts": prompts, "warm": warm, "output_len": 2},
        },
    }
    path = tmp_path / "workload.json"
    path.write_text(json.dumps(workload))
    result = peer.offline(path, tmp_path / "out.json")
    metrics = {(row["workload"], row["metric"]) for row in result["rows"]}
    assert metrics == {
        ("W1", "output tokens/s"),
        ("W2", "TTFT"),
        ("W2", "per output token"),
        ("W4", "output tokens/s"),
        ("W4", "output tokens/s (prefix caching off)"),
    }
    assert all(row["value"] > 0 for row in result["rows"])
    assert "'kv_cache_dtype': 'bfloat16'" in result["settings"]
    assert "matmul cpu" in result["settings"]
    assert "step compilations in timed runs" in result["settings"]
    assert json.loads((tmp_path / "out.json").read_text()) == result


def test_warm_up_prompts_are_fresh_but_share_what_the_originals_share():
    peer = _module(BENCHMARKS / "peers" / "esurge_peer.py")
    prefix = [7, 3, 9, 3, 11]
    prompts = [[*prefix, 20, 21], [*prefix, 22, 20], [9, 7]]
    for shift in (1, 2, 5):
        moved = peer._relabelled(prompts, shift)
        assert [len(p) for p in moved] == [len(p) for p in prompts]
        assert moved[0][:5] == moved[1][:5] and moved[0][5] != moved[1][5]
        assert all(a != b for p, q in zip(prompts, moved) for a, b in zip(p, q))
        used = {t for p in prompts for t in p}
        assert {t for p in moved for t in p} <= used  # never a special or unseen id
        # equal ids stay equal, different ids stay different
        pairs = {(a, b) for p, q in zip(prompts, moved) for a, b in zip(p, q)}
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    assert peer._relabelled(prompts, 0) == prompts


def test_esurge_peer_rejects_an_unknown_precision_naming_the_choices():
    peer = _module(BENCHMARKS / "peers" / "esurge_peer.py")
    with pytest.raises(ValueError, match="float32, bf16-weights, bf16-weights-kv or bfloat16"):
        peer.dtype_options("int4")


def test_esurge_peer_setting_may_name_backends_after_the_precision():
    peer = _module(BENCHMARKS / "peers" / "esurge_peer.py")
    assert peer.engine_options("bf16-weights,matmul=xla,attention=cpu") == {
        "dtype": "float32",
        "param_dtype": "bfloat16",
        "matmul": "xla",
        "attention": "cpu",
    }
    for bad in ("float32,sampler=x", "float32,matmul", "float32,matmul="):
        with pytest.raises(ValueError, match="engine choice must be KEY=VALUE"):
            peer.engine_options(bad)
    with pytest.raises(ValueError, match="max_num_batched_tokens=lots"):
        peer.engine_options("float32,max_num_batched_tokens=lots")
    argv, _ = peer.server_command("w.json", 8000, "float32,max_num_batched_tokens=512")
    budget = argv.index("--max-num-batched-tokens") + 1
    assert argv[budget] == "512" and argv.count("--max-num-batched-tokens") == 1


def test_esurge_peer_process_choices_become_environment_variables():
    peer = _module(BENCHMARKS / "peers" / "esurge_peer.py")
    assert peer.process_env("bf16-weights-kv") == {}
    env = peer.process_env("bf16-weights-kv,malloc=default,pack=off")
    assert env == {"ESURGE_TUNE_MALLOC": "0", "ESURGE_CPU_PACK_WEIGHTS": "0"}
    assert peer.process_env("bf16-weights-kv,greedy_head=off") == {"ESURGE_CPU_GREEDY_HEAD": "0"}
    assert peer.engine_options("bf16-weights-kv,pack=off") == peer.engine_options("bf16-weights-kv")
    with pytest.raises(ValueError, match=r"pack must be one of \['on', 'off'\]"):
        peer.process_env("float32,pack=maybe")


def test_report_gives_esurges_best_ratio_to_each_peer():
    driver = _module(BENCHMARKS / "compare_peers.py")
    row = {"workload": "W1", "metric": "output tokens/s", "unit": "tok/s", "precision": "x"}
    ms = {"workload": "W2", "metric": "TTFT", "unit": "ms", "precision": "x"}
    results = [
        {"peer": "esurge", "rows": [{**row, "value": 300.0}, {**ms, "value": 50.0}]},
        {"peer": "esurge", "rows": [{**row, "value": 400.0}, {**ms, "value": 80.0}]},
        {"peer": "vllm", "rows": [{**row, "value": 800.0}, {**ms, "value": 25.0}]},
    ]
    table = driver.markdown(results)
    assert "| W1 | output tokens/s | vllm | x | 800.0 tok/s | 0.50x |" in table
    assert "| W2 | TTFT | vllm | x | 25.0 ms | 0.50x |" in table  # 25 ms / best 50 ms


def test_server_compilations_reads_the_counter_from_metrics():
    import http.server
    import threading

    peer = _module(BENCHMARKS / "peers" / "esurge_peer.py")
    bodies = {
        "/with/metrics": b"# TYPE esurge:num_compilations counter\n"
        b'esurge:num_compilations_total{model_name="m"} 7.0\n',
        "/without/metrics": b"other_total 1.0\n",
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert peer.server_compilations(f"{base}/with") == 7
        with pytest.raises(RuntimeError, match="num_compilations_total"):
            peer.server_compilations(f"{base}/without")
    finally:
        server.shutdown()
        server.server_close()


def test_server_warm_up_repeats_fresh_prompts_until_a_pass_compiles_nothing(monkeypatch):
    peer = _module(BENCHMARKS / "peers" / "esurge_peer.py")
    compiles_per_pass = [3, 1, 0, 2]  # the third pass compiles nothing: stop there
    passes: list[list[list[int]]] = []
    count = {"n": 0}

    def run(batch):
        count["n"] += compiles_per_pass[len(passes)]
        passes.append(batch)

    monkeypatch.setattr(peer, "server_compilations", lambda base_url: count["n"])
    prompts = [[5, 6, 7], [5, 6, 8]]
    peer.warm_up_server("http://unused", run, prompts)
    assert passes == [peer._relabelled(prompts, shift) for shift in range(3)]

    passes.clear()
    compiles_per_pass = [1] * peer.MAX_WARM_UP_RUNS + [0]  # never settles: bounded
    peer.warm_up_server("http://unused", run, prompts)
    assert len(passes) == peer.MAX_WARM_UP_RUNS


def test_vllm_peer_setting_may_name_a_step_token_budget():
    peer = _module(BENCHMARKS / "peers" / "vllm_peer.py")
    assert peer.parse_setting("bfloat16") == ("bfloat16", None)
    assert peer.parse_setting("fp32,max_num_batched_tokens=512") == ("float32", 512)
    for bad in ("bfloat16,max_num_batched_tokens=0", "bfloat16,max_num_seqs=8"):
        with pytest.raises(ValueError, match="max_num_batched_tokens=N"):
            peer.parse_setting(bad)
    with pytest.raises(ValueError, match="float dtype"):
        peer.parse_setting("Q4_1,max_num_batched_tokens=512")


def test_esurge_peer_setting_may_ask_for_speculative_decoding():
    peer = _module(BENCHMARKS / "peers" / "esurge_peer.py")
    options = peer.engine_options("bf16-weights-kv,num_speculative_tokens=5,prompt_lookup_max=3")
    assert options["num_speculative_tokens"] == 5 and options["prompt_lookup_max"] == 3
    argv, _ = peer.server_command("w.json", 8000, "float32,num_speculative_tokens=5")
    assert argv[argv.index("--num-speculative-tokens") + 1] == "5"


def test_llama_cpp_peer_setting_passes_speculative_flags_to_the_server():
    peer = _module(BENCHMARKS / "peers" / "llama_cpp_peer.py")
    assert peer.split_setting("F16") == ("F16", [])
    precision, flags = peer.split_setting("F16,spec-type=ngram-simple,spec-draft-n-max=16")
    assert precision == "F16"
    assert flags == ["--spec-type", "ngram-simple", "--spec-draft-n-max", "16"]
    for bad in ("F16,threads=4", "F16,spec-type", "F16,spec-type="):
        with pytest.raises(ValueError, match="spec-KEY=VALUE"):
            peer.split_setting(bad)
