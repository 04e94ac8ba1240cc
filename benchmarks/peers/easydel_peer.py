"""EasyDeL eSurge peer of the eSurge benchmark (issue 9): offline workloads and its API server.

EasyDeL's eSurge is the JAX engine this project learns from; it runs here on the JAX CPU
backend with ``attn_mechanism="ragged_page_attention_v2"`` (its default on CPU, v3, is a TPU
Pallas kernel). Run this file with the EasyDeL virtualenv (see ``setup_easydel.sh``); it
imports only the standard library and EasyDeL's own stack, never the eSurge core:

    /work/peers/easydel/bin/python benchmarks/peers/easydel_peer.py offline \
        --workload-file W.json --out O.json

Prompts are token ids. eSurge's public ``generate``/``stream`` take text, so every prompt is
handed over under a label (``"prompt-0"``, ...) and the engine's ``_tokenize_prompt`` is
replaced on the instance by a lookup of that label: the engine schedules exactly the ids of the
workload, without a decode/re-encode round trip that would change their number.

``serve`` mode starts EasyDeL's ``eSurgeApiServer`` for W3; ``server_command`` (importable from
any interpreter, it imports nothing from EasyDeL) builds its argv. That server accepts only text
prompts and has no ``ignore_eos`` field, so ``serve`` adds an HTTP middleware that turns a
token-id ``prompt`` into a label (same lookup as above) and a ``refine_sampling_params`` hook
that sets ``ignore_eos`` and ``min_tokens = max_tokens`` on every request.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

PEER = "easydel"
SERVED_MODEL = "smollm2-135m-instruct"
VENV_PYTHON = "/work/peers/easydel/bin/python"
ATTENTION = "ragged_page_attention_v2"
PRECISIONS = ("float32", "bfloat16")
MAX_NUM_SEQS = 64
PAGE_SIZE = 128
MAX_MODEL_LEN = 1024
SERVER_MAX_NUM_SEQS = 32


def server_command(
    workload_file: str, port: int, precision: str
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment that start EasyDeL's OpenAI-compatible server on 127.0.0.1:port."""
    argv = [
        VENV_PYTHON,
        str(Path(__file__).resolve()),
        "serve",
        "--workload-file",
        workload_file,
        "--port",
        str(port),
        "--precision",
        precision,
    ]
    return argv, {"JAX_PLATFORMS": "cpu"}


class TokenIdPrompts:
    """Hands token-id prompts to an eSurge engine under text labels.

    ``label(ids)`` returns a string to pass as the prompt; the engine's ``_tokenize_prompt``
    (instance attribute, replaced by ``install``) maps the label back to its ids. Text that is
    not a label is tokenised by the engine's own tokenizer as before.
    """

    def __init__(self) -> None:
        self._ids: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._next = 0

    def label(self, ids: list[int]) -> str:
        """Register ``ids`` and return the label that stands for them."""
        with self._lock:
            label = f"prompt-{self._next}"
            self._next += 1
            self._ids[label] = [int(token) for token in ids]
        return label

    def install(self, engine: Any) -> None:
        """Make ``engine`` resolve labels to their ids when it tokenises a prompt."""
        original = engine._tokenize_prompt

        def tokenize(request_id: str, prompt: str) -> list[int]:
            with self._lock:
                ids = self._ids.pop(prompt, None)
            return ids if ids is not None else original(request_id, prompt)

        engine._tokenize_prompt = tokenize


def rope_theta_of(folder: str) -> float:
    """RoPE base of the Hugging Face folder's ``config.json``.

    transformers 5 writes it only inside ``rope_parameters``; EasyDeL 0.3.0 reads the top-level
    ``rope_theta`` and silently falls back to 10000 without it (SmolLM2 uses 100000), which
    changes every generated token after the first. It is therefore always passed explicitly.
    """
    config = json.loads((Path(folder) / "config.json").read_text())
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is None:
        raise ValueError(f"{folder}/config.json names no rope_theta (top level or rope_parameters)")
    return float(theta)


def kv_cache_bytes(folder: str, precision: str, max_num_seqs: int, longest: int) -> int:
    """Bytes of a paged KV cache that holds ``max_num_seqs`` sequences of ``longest`` tokens.

    One page of a sequence is added as slack for the async scheduler's look-ahead.
    """
    config = json.loads((Path(folder) / "config.json").read_text())
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim
    page_bytes = per_token * PAGE_SIZE * (4 if precision == "float32" else 2)
    pages_per_seq = -(-longest // PAGE_SIZE) + 1
    return max_num_seqs * pages_per_seq * page_bytes


def cap_kv_cache(budget_bytes: int) -> None:
    """Cap the bytes EasyDeL gives its paged KV cache.

    EasyDeL sizes the cache from the device's memory stats; JAX's CPU device has none, so it
    falls back to a fixed 4 GiB and ignores ``hbm_utilization``. Its CPU attention then works on
    the whole cache: in bf16 the process grew past 14 GB (OOM-killed on a 23 GB machine) and
    each step slows with the cache size, so the cache is sized to the workload instead.
    """
    from easydel.caching.ragged_page import cache

    original = cache.per_device_hbm_budget_bytes

    def capped(util: float = 0.9, mode: str = "free", safety_margin: int = 256 << 20) -> int:
        return min(original(util, mode, safety_margin), budget_bytes)

    cache.per_device_hbm_budget_bytes = capped


def build_engine(
    folder: str,
    precision: str,
    max_num_seqs: int,
    max_model_len: int,
    enable_prefix_caching: bool,
):
    """eSurge on the Hugging Face ``folder`` at ``precision``, started and ready for requests."""
    import jax.numpy as jnp
    from easydel.inference.esurge import eSurge

    if precision not in PRECISIONS:
        raise ValueError(
            f"easydel peer runs precision float32 or bfloat16, not {precision!r}; "
            "set the workload's precision to one of those"
        )
    cap_kv_cache(kv_cache_bytes(folder, precision, max_num_seqs, max_model_len))
    engine = eSurge(
        model=folder,
        dtype=jnp.float32 if precision == "float32" else jnp.bfloat16,
        attn_mechanism=ATTENTION,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        page_size=PAGE_SIZE,
        reserve_tokens=1,
        enable_prefix_caching=enable_prefix_caching,
        auto_truncate_prompt=False,
        auto_cap_new_tokens=False,
        strict_context=True,
        silent_mode=True,
        config_kwargs={"rope_theta": rope_theta_of(folder)},
    )
    engine.initiate()
    return engine


def greedy(output_len: int):
    """Sampling params: greedy, exactly ``output_len`` tokens (EOS ignored)."""
    from easydel.inference.sampling_params import SamplingParams

    return SamplingParams(
        max_tokens=output_len, min_tokens=output_len, ignore_eos=True, temperature=0.0, top_k=1
    )


def generate(engine, prompts: TokenIdPrompts, batch: list[list[int]], output_len: int) -> float:
    """Seconds to generate ``output_len`` tokens for every prompt of ``batch`` in one call."""
    labels = [prompts.label(ids) for ids in batch]
    start = time.perf_counter()
    outputs = engine.generate(labels, greedy(output_len), use_tqdm=False)
    elapsed = time.perf_counter() - start
    lengths = sorted({len(output.outputs[0].token_ids) for output in outputs})
    if len(outputs) != len(batch) or lengths != [output_len]:
        raise RuntimeError(
            f"eSurge returned {len(outputs)} outputs with lengths {lengths}; expected "
            f"{len(batch)} outputs of {output_len} tokens"
        )
    return elapsed


def stream(
    engine, prompts: TokenIdPrompts, prompt: list[int], output_len: int
) -> tuple[float, float]:
    """(seconds to the first token, seconds to the last) of one streamed request."""
    label = prompts.label(prompt)
    start = time.perf_counter()
    first = None
    generated = 0
    for snapshot in engine.stream(label, greedy(output_len)):
        generated = snapshot.num_generated_tokens
        if first is None and generated > 0:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    if first is None or generated != output_len:
        raise RuntimeError(f"eSurge streamed {generated} tokens, expected {output_len}")
    return first, total


def max_model_len_for(specs: dict) -> int:
    """Context length that holds the longest prompt plus its output, rounded up to a page."""
    lengths = [0]
    for spec in specs.values():
        batch = spec.get("prompts", []) + spec.get("warm", []) if "prompts" in spec else []
        singles = [spec["prompt"], spec["warm"]] if "prompt" in spec else []
        lengths += [len(ids) + spec["output_len"] for ids in batch + singles]
    longest = max(lengths)
    pages = -(-(longest + 1) // PAGE_SIZE)
    return max(MAX_MODEL_LEN, pages * PAGE_SIZE)


def offline(workload_file: Path, out: Path) -> dict:
    """Run the workloads named in ``workload_file`` and write the result rows to ``out``."""
    import easydel
    import jax

    workload = json.loads(workload_file.read_text())
    precision = workload.get("precision", "float32")
    specs = workload["workloads"]
    batch = max([len(spec["prompts"]) for spec in specs.values() if "prompts" in spec] + [1])
    max_num_seqs = min(MAX_NUM_SEQS, batch)
    max_model_len = max_model_len_for(specs)
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

    prompts = TokenIdPrompts()
    engine = build_engine(workload["hf_folder"], precision, max_num_seqs, max_model_len, True)
    prompts.install(engine)
    try:
        if "W1" in specs:
            spec = specs["W1"]
            generate(engine, prompts, spec["warm"], spec["output_len"])
            elapsed = generate(engine, prompts, spec["prompts"], spec["output_len"])
            add(
                "W1",
                "output tokens/s",
                len(spec["prompts"]) * spec["output_len"] / elapsed,
                "tok/s",
            )
        if "W2" in specs:
            spec = specs["W2"]
            if spec["output_len"] < 2:
                raise ValueError(f"W2 output_len must be at least 2, got {spec['output_len']}")
            stream(engine, prompts, spec["warm"], spec["output_len"])
            first, total = stream(engine, prompts, spec["prompt"], spec["output_len"])
            add("W2", "TTFT", first * 1000, "ms")
            add("W2", "per output token", (total - first) * 1000 / (spec["output_len"] - 1), "ms")
        if "W4" in specs:
            spec = specs["W4"]
            generate(engine, prompts, spec["warm"], spec["output_len"])
            elapsed = generate(engine, prompts, spec["prompts"], spec["output_len"])
            add(
                "W4",
                "output tokens/s",
                len(spec["prompts"]) * spec["output_len"] / elapsed,
                "tok/s",
            )
        runner = engine.runner
        resolved = (
            f"max_num_batched_tokens {getattr(runner, 'max_num_batched_tokens', '?')}, "
            f"num_pages {getattr(getattr(runner, 'metadata', None), 'num_pages', '?')}"
        )
    finally:
        engine.terminate()
        engine.__del__()  # the only call that also stops its tokenizer/detokenizer processes
    result = {
        "peer": PEER,
        "version": f"easydel {easydel.__version__}, jax {jax.__version__}",
        "settings": (
            f"eSurge on JAX {jax.default_backend()} ({jax.device_count()} device), "
            f"attn_mechanism {ATTENTION}, dtype {precision}, max_num_seqs {max_num_seqs}, "
            f"page_size {PAGE_SIZE}, max_model_len {max_model_len}, {resolved}, "
            "prefix caching on (W4 is timed with it), async scheduling and overlap execution "
            "on (defaults), KV cache sized to max_num_seqs x max_model_len (+1 page each) (the "
            "CPU device has no memory stats: EasyDeL would take a fixed 4 GiB, hbm_utilization "
            "is unused); greedy, ignore_eos, min_tokens=max_tokens; "
            "each workload's warm prompts run first on the same engine (compiles excluded); "
            "token-id prompts passed through a _tokenize_prompt lookup; W2 via engine.stream"
        ),
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2))
    return result


def serve(workload_file: Path, port: int, precision: str) -> None:
    """Run eSurgeApiServer on 127.0.0.1:``port`` until SIGTERM, accepting token-id prompts."""
    import uvicorn
    from easydel.inference.esurge.server.api_server import eSurgeApiServer

    workload = json.loads(workload_file.read_text())
    max_model_len = max_model_len_for(workload.get("workloads", {}))
    prompts = TokenIdPrompts()
    engine = build_engine(
        workload["hf_folder"], precision, SERVER_MAX_NUM_SEQS, max_model_len, True
    )
    prompts.install(engine)

    def exact_length(sampling_params, *args: Any, **kwargs: Any):
        sampling_params.ignore_eos = True
        if sampling_params.max_tokens:
            sampling_params.min_tokens = sampling_params.max_tokens
        return sampling_params

    server = eSurgeApiServer(
        {SERVED_MODEL: engine},
        enable_function_calling=False,
        require_api_key=False,
        enable_persistence=False,
        refine_sampling_params=exact_length,
    )
    uvicorn.run(
        CompletionsAdapter(server.app, prompts),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_keep_alive=60,
    )


class CompletionsAdapter:
    """ASGI wrapper that makes eSurgeApiServer's ``/v1/completions`` speak the OpenAI format.

    Requests: a token-id ``prompt`` (EasyDeL accepts only text) becomes a ``TokenIdPrompts``
    label. Streamed responses: EasyDeL sends chat-style ``delta.content`` and a cumulative
    ``usage`` on every chunk; each chunk is rewritten to carry ``text`` and no usage, and the
    last usage is sent as its own ``{"choices": [], "usage": ...}`` chunk before ``[DONE]``,
    as OpenAI does with ``stream_options.include_usage``.
    """

    def __init__(self, app: Any, prompts: TokenIdPrompts) -> None:
        self.app = app
        self.prompts = prompts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass everything through, rewriting POST /v1/completions both ways."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not scope["path"].endswith("/v1/completions"):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = json.loads(body or b"{}")
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            payload["prompt"] = self.prompts.label(prompt)
        body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = dict(scope, headers=[*headers, (b"content-length", str(len(body)).encode())])
        replayed = False
        usage: dict = {}

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def rewrite(message: dict) -> None:
            if message["type"] == "http.response.body" and message.get("body", b"")[:5] == b"data:":
                message = dict(message, body=self._rewrite_events(message["body"], usage))
            await send(message)

        await self.app(scope, replay, rewrite)

    @staticmethod
    def _rewrite_events(body: bytes, usage: dict) -> bytes:
        events = []
        for event in body.decode().split("\n\n"):
            data = event[5:].strip() if event.startswith("data:") else None
            if data is None or not data.startswith("{"):
                if data == "[DONE]" and usage:
                    events.append("data: " + json.dumps({"choices": [], "usage": usage}))
                events.append(event)
                continue
            chunk = json.loads(data)
            usage.update(chunk.pop("usage", None) or {})
            for choice in chunk.get("choices", []):
                delta = choice.pop("delta", None) or {}
                choice.setdefault("text", delta.get("content") or "")
            events.append("data: " + json.dumps(chunk))
        return "\n\n".join(events).encode()


def main() -> None:
    """Command line: ``offline --workload-file F --out OUT.json`` or ``serve ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("offline", help="run W1/W2/W4 from the workload file")
    run.add_argument("--workload-file", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True)
    srv = sub.add_parser("serve", help="start eSurgeApiServer for W3")
    srv.add_argument("--workload-file", type=Path, required=True)
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--precision", default="float32", choices=PRECISIONS)
    args = parser.parse_args()
    if args.mode == "offline":
        offline(args.workload_file, args.out)
    else:
        serve(args.workload_file, args.port, args.precision)
    sys.exit(0)


if __name__ == "__main__":
    main()
