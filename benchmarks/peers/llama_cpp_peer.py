"""llama.cpp peer of the eSurge benchmark (issue 9): ``llama-server`` for every workload.

Every number comes from llama.cpp's own ``llama-server`` (built from the sources vendored in the
llama-cpp-python sdist by ``benchmarks/peers/setup_llama_cpp.sh``), never from the Python
binding, whose server runs one request at a time. The server batches its parallel slots
continuously, so:

* W1: one server with one slot per prompt (``-np 64``); all prompts are posted at once from
  threads; output tokens/s = generated tokens / wall time from the first post to the last reply;
* W2: one server with one slot; one streaming ``/completion`` request. TTFT = post to the first
  streamed token, per output token = (last token - TTFT) / (output_len - 1), both measured by the
  client (the server's own ``timings`` are reported next to them under ``server_timings``);
* W4: as W1 with prompt caching on (``cache_prompt`` and the host-RAM prompt cache); the rows say
  how many prompt tokens the server really evaluated, so the reader sees how much prefix was
  reused (llama.cpp shares KV only with a finished or idle slot, not between requests that
  arrive together);
* W3 (server mode): :func:`server_command` with 32 slots, :data:`SERVED_MODEL` as model name.

Prompts are token-id arrays (``"prompt": [ids]``); greedy (temperature 0, top-k 1); every request
asks ``n_predict = output_len`` with ``ignore_eos`` and each reply is checked to have generated
exactly that many tokens. Precision picks the GGUF: ``Q4_1`` is the packaged file, ``F16`` /
``float16`` / ``bfloat16`` the F16 file that ``llama-quantize`` dequantised from it (the same
weight values), ``BF16`` a BF16 file if one was made. After it, ``,spec-KEY=VALUE`` items
become the server's ``--spec-KEY VALUE`` flags, for its speculative decoding (for example
``F16,spec-type=ngram-simple,spec-draft-n-max=4``: n-gram drafts, as eSurge's
``num_speculative_tokens``). Run with any Python 3.10+ (only the
standard library is imported):

    python benchmarks/peers/llama_cpp_peer.py offline --workload-file W.json --out O.json

Environment: ``LLAMA_CPP_BIN_DIR`` (folder of ``llama-server``, default
``/work/peers/llama.cpp/build/bin``), ``LLAMA_CPP_F16_GGUF`` / ``LLAMA_CPP_BF16_GGUF`` (the
dequantised files, default ``/work/peers/smollm2-{f16,bf16}.gguf``), ``LLAMA_CPP_THREADS``
(default: the CPUs this process may use).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

PEER = "llama_cpp"
SERVED_MODEL = "smollm2-135m"
BIN_DIR = Path(os.environ.get("LLAMA_CPP_BIN_DIR", "/work/peers/llama.cpp/build/bin"))
F16_GGUF = Path(os.environ.get("LLAMA_CPP_F16_GGUF", "/work/peers/smollm2-f16.gguf"))
BF16_GGUF = Path(os.environ.get("LLAMA_CPP_BF16_GGUF", "/work/peers/smollm2-bf16.gguf"))
PRECISION_FILES = {
    "Q4_1": "packaged",
    "F16": "f16",
    "float16": "f16",
    "bfloat16": "f16",
    "BF16": "bf16",
}
W3_SLOTS = 32
W3_DEFAULT_SLOT_CONTEXT = 1024
WARM_NEW_TOKENS = 8
CONTEXT_PAD = 256  # llama.cpp pads the per-slot context (n_ctx / n_parallel) to this
START_TIMEOUT_S = 300.0


def threads() -> int:
    """Threads for generation and prompt processing: ``LLAMA_CPP_THREADS`` or usable CPUs."""
    if "LLAMA_CPP_THREADS" in os.environ:
        return int(os.environ["LLAMA_CPP_THREADS"])
    return len(os.sched_getaffinity(0))


def server_binary() -> Path:
    """Path of ``llama-server``; an error naming the set-up script when it is missing."""
    binary = BIN_DIR / "llama-server"
    if not binary.is_file():
        raise FileNotFoundError(
            f"llama-server not found at {binary}; build it with "
            "benchmarks/peers/setup_llama_cpp.sh or set LLAMA_CPP_BIN_DIR to its folder"
        )
    return binary


def split_setting(setting: str) -> tuple[str, list[str]]:
    """``PRECISION[,spec-KEY=VALUE...]`` -> the precision and the ``--spec-KEY VALUE`` flags."""
    precision, *choices = setting.split(",")
    flags: list[str] = []
    for choice in choices:
        key, sep, value = choice.partition("=")
        if not key.startswith("spec-") or not sep or not value:
            raise ValueError(
                f"llama_cpp setting items must be spec-KEY=VALUE (llama-server's --spec-KEY "
                f"flags), got {choice!r}"
            )
        flags += [f"--{key}", value]
    return precision, flags


def model_file(workload: dict, precision: str) -> Path:
    """The GGUF that runs ``precision``: the packaged Q4_1 file or a dequantised copy of it."""
    kind = PRECISION_FILES.get(precision)
    if kind is None:
        raise ValueError(
            f"llama_cpp peer runs precision {sorted(PRECISION_FILES)}, not {precision!r}"
        )
    path = {"packaged": Path(workload["gguf"]), "f16": F16_GGUF, "bf16": BF16_GGUF}[kind]
    if not path.is_file():
        raise FileNotFoundError(
            f"GGUF for precision {precision!r} not found at {path}; make it with "
            "benchmarks/peers/setup_llama_cpp.sh (llama-quantize --allow-requantize)"
        )
    return path


def slot_context(tokens: int) -> int:
    """Per-slot context that holds ``tokens`` plus one spare, padded as llama.cpp pads it.

    The server stops a slot when its cached tokens + 1 reach the slot context, so a prompt of
    P tokens generating N needs at least P + N + 1.
    """
    needed = tokens + 1
    return -(-needed // CONTEXT_PAD) * CONTEXT_PAD


def server_argv(
    model: Path,
    port: int,
    slots: int,
    context_per_slot: int,
    *,
    cache_ram_mib: int,
    extra: list[str] | None = None,
) -> list[str]:
    """``llama-server`` argv: ``slots`` parallel slots of ``context_per_slot`` tokens each,
    then the ``extra`` flags (the setting's speculative decoding).

    ``-c`` is the total KV size; with an explicit ``-np`` the KV is split per slot (not unified),
    each slot getting ``-c / -np`` tokens. Continuous batching and flash attention are the
    server's defaults (on / auto); sampling defaults are greedy so plain OpenAI requests with
    temperature 0 need nothing else.
    """
    n = str(threads())
    return [
        str(server_binary()),
        "--model",
        str(model),
        "--alias",
        SERVED_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        n,
        "--threads-batch",
        n,
        "--parallel",
        str(slots),
        "--ctx-size",
        str(slots * context_per_slot),
        "--cont-batching",
        "--cache-ram",
        str(cache_ram_mib),
        "--temp",
        "0",
        "--top-k",
        "1",
        "--no-webui",
        *(extra or []),
    ]


def server_command(workload_file: str, port: int, precision: str) -> tuple[list[str], dict]:
    """argv and extra environment that start ``llama-server`` on 127.0.0.1:``port`` for W3.

    32 slots; each slot's context fits the longest prompt of the workload file plus its output
    (``W3`` entry when present, else 1024 tokens per slot).
    """
    workload = json.loads(Path(workload_file).read_text())
    spec = workload.get("workloads", {}).get("W3")
    if spec and spec.get("prompts"):
        longest = max(len(p) for p in spec["prompts"]) + int(spec.get("output_len", 128))
        per_slot = slot_context(longest)
    else:
        per_slot = W3_DEFAULT_SLOT_CONTEXT
    precision, extra = split_setting(precision)
    model = model_file(workload, precision)
    return server_argv(model, port, W3_SLOTS, per_slot, cache_ram_mib=8192, extra=extra), {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, payload: dict, timeout: float = 3600.0) -> dict:
    """POST ``payload`` as JSON and return the JSON reply."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class LlamaServer:
    """A ``llama-server`` child process in its own process group, stopped on exit.

    Its log goes to a temporary file that is printed when the server fails to start.
    """

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.port = int(argv[argv.index("--port") + 1])
        self.base = f"http://127.0.0.1:{self.port}"
        fd, log = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        os.close(fd)
        self.log = Path(log)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LlamaServer:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND)
        try:
            self.process = subprocess.Popen(
                self.argv, stdout=fd, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            os.close(fd)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"llama-server exited with {self.process.returncode}: {tail}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise TimeoutError(f"llama-server did not answer in {START_TIMEOUT_S} s: {tail}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM the server's process group, then SIGKILL it if it lingers; drop the log."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if not os.environ.get("LLAMA_CPP_KEEP_LOG"):
            self.log.unlink(missing_ok=True)

    def log_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters of the server's log."""
        return self.log.read_text(errors="replace")[-chars:]

    def complete(self, prompt: list[int], n_predict: int, *, cache_prompt: bool) -> dict:
        """One non-streaming ``/completion``: greedy, exactly ``n_predict`` tokens."""
        reply = post(self.base + "/completion", request_body(prompt, n_predict, cache_prompt))
        check_generated(reply, n_predict)
        return reply


def request_body(prompt: list[int], n_predict: int, cache_prompt: bool) -> dict:
    """``/completion`` body: token-id prompt, greedy, EOS ignored, ``n_predict`` tokens."""
    return {
        "prompt": prompt,
        "n_predict": n_predict,
        "ignore_eos": True,
        "temperature": 0.0,
        "top_k": 1,
        "cache_prompt": cache_prompt,
        "return_tokens": True,
    }


def check_generated(reply: dict, expected: int) -> None:
    """Raise when the server generated other than ``expected`` tokens."""
    got = reply.get("tokens_predicted")
    if got != expected:
        raise RuntimeError(
            f"llama-server generated {got} tokens, expected {expected} "
            f"(stop_type {reply.get('stop_type')!r}); enlarge the slot context"
        )


def all_at_once(
    server: LlamaServer, prompts: list[list[int]], n_predict: int, *, cache_prompt: bool
) -> tuple[float, list[dict]]:
    """Post every prompt at the same moment from its own thread; wall seconds and replies."""
    replies: list[dict | None] = [None] * len(prompts)
    errors: list[BaseException] = []
    gate = threading.Barrier(len(prompts) + 1)

    def send(index: int) -> None:
        gate.wait()
        try:
            replies[index] = server.complete(prompts[index], n_predict, cache_prompt=cache_prompt)
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    workers = [threading.Thread(target=send, args=(i,)) for i in range(len(prompts))]
    for worker in workers:
        worker.start()
    gate.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, [reply for reply in replies if reply is not None]


def streamed(server: LlamaServer, prompt: list[int], n_predict: int) -> tuple[float, float, dict]:
    """Stream one ``/completion``; (first token s, last token s, final chunk) from the post."""
    body = dict(request_body(prompt, n_predict, False), stream=True)
    request = urllib.request.Request(
        server.base + "/completion",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    first = last = None
    seen = 0
    final: dict = {}
    with urllib.request.urlopen(request, timeout=3600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            chunk = json.loads(line[5:])
            if chunk.get("tokens"):
                now = time.perf_counter()
                first = now if first is None else first
                last = now
                seen += len(chunk["tokens"])
            if chunk.get("stop"):
                final = chunk
                break
    check_generated(final, n_predict)
    if first is None or last is None or seen != n_predict:
        raise RuntimeError(f"stream carried {seen} tokens, expected {n_predict}")
    return first - start, last - start, final


def run_w1(model: Path, spec: dict, extra: list[str]) -> tuple[float, dict]:
    """W1 output tokens/s over all prompts at once, after the warm prompts ran once."""
    prompts, output_len = spec["prompts"], spec["output_len"]
    longest = max(len(p) for p in prompts + spec["warm"])
    context = slot_context(longest + output_len)
    argv = server_argv(model, free_port(), len(prompts), context, cache_ram_mib=0, extra=extra)
    with LlamaServer(argv) as server:
        all_at_once(server, spec["warm"], min(WARM_NEW_TOKENS, output_len), cache_prompt=False)
        elapsed, replies = all_at_once(server, prompts, output_len, cache_prompt=False)
    return len(prompts) * output_len / elapsed, server_totals(replies, elapsed)


def run_w2(model: Path, spec: dict, extra: list[str]) -> tuple[float, float, dict]:
    """W2 (TTFT ms, ms per output token) of one streamed prompt, after the warm prompt."""
    output_len = spec["output_len"]
    if output_len < 2:
        raise ValueError(f"W2 output_len must be at least 2 to time decode, got {output_len}")
    longest = max(len(spec["prompt"]), len(spec["warm"]))
    context = slot_context(longest + output_len)
    argv = server_argv(model, free_port(), 1, context, cache_ram_mib=0, extra=extra)
    with LlamaServer(argv) as server:
        server.complete(spec["warm"], output_len, cache_prompt=False)
        first, last, final = streamed(server, spec["prompt"], output_len)
    timings = final.get("timings", {})
    server_side = {
        "prompt_tokens_evaluated": timings.get("prompt_n"),
        "prompt_ms": timings.get("prompt_ms"),
        "predicted_per_token_ms": timings.get("predicted_per_token_ms"),
    }
    return first * 1000, (last - first) * 1000 / (output_len - 1), server_side


def run_w4(model: Path, spec: dict, extra: list[str]) -> tuple[float, dict]:
    """W4 output tokens/s of the shared-prefix prompts at once, prompt caching on."""
    prompts, output_len = spec["prompts"], spec["output_len"]
    longest = max(len(p) for p in prompts + spec["warm"])
    context = slot_context(longest + output_len)
    argv = server_argv(model, free_port(), len(prompts), context, cache_ram_mib=8192, extra=extra)
    with LlamaServer(argv) as server:
        all_at_once(server, spec["warm"], min(WARM_NEW_TOKENS, output_len), cache_prompt=True)
        elapsed, replies = all_at_once(server, prompts, output_len, cache_prompt=True)
    totals = server_totals(replies, elapsed)
    totals["prompt_tokens_sent"] = sum(len(p) for p in prompts)
    return len(prompts) * output_len / elapsed, totals


def server_totals(replies: list[dict], elapsed: float) -> dict:
    """What the server reports over ``replies``: prompt tokens it evaluated, wall seconds."""
    return {
        "wall_s": round(elapsed, 3),
        "prompt_tokens_evaluated": sum(r.get("timings", {}).get("prompt_n", 0) for r in replies),
    }


def version() -> str:
    """``llama-server --version`` (build number and commit)."""
    done = subprocess.run(
        [str(server_binary()), "--version"], capture_output=True, text=True, timeout=60
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    found = [line.removeprefix("version:").strip() for line in lines if line.startswith("version")]
    return "llama.cpp " + (found[0] if found else lines[-1] if lines else "unknown")


def offline(workload_file: Path, out: Path) -> dict:
    """Run the workloads named in ``workload_file`` and write the result rows to ``out``."""
    workload = json.loads(workload_file.read_text())
    precision = workload.get("precision", "Q4_1")
    base_precision, extra = split_setting(precision)
    model = model_file(workload, base_precision)
    specs = workload["workloads"]
    rows: list[dict] = []
    server_side: dict[str, dict] = {}

    def add(name: str, metric: str, value: float, unit: str) -> None:
        row = {
            "workload": name,
            "metric": metric,
            "value": round(value, 2),
            "unit": unit,
            "precision": precision,
        }
        rows.append(row)
        print(f"{PEER} {name} {precision} {metric}: {value:.2f} {unit}", flush=True)

    if "W1" in specs:
        tok_s, server_side["W1"] = run_w1(model, specs["W1"], extra)
        add("W1", "output tokens/s", tok_s, "tok/s")
    if "W2" in specs:
        ttft, per_token, server_side["W2"] = run_w2(model, specs["W2"], extra)
        add("W2", "TTFT", ttft, "ms")
        add("W2", "per output token", per_token, "ms")
    if "W4" in specs:
        tok_s, server_side["W4"] = run_w4(model, specs["W4"], extra)
        add("W4", "output tokens/s", tok_s, "tok/s")
    n = threads()
    result = {
        "peer": PEER,
        "version": version(),
        "settings": (
            f"llama-server, GGUF {model.name} ({precision}), -t {n} -tb {n}, continuous "
            "batching, flash attention auto, one slot per concurrent request (-np = number of "
            "prompts, -c = slots x per-slot context padded to 256, KV split per slot), greedy "
            "(temperature 0, top-k 1), n_predict = output_len with ignore_eos, token-id "
            "prompts over HTTP from client threads; W1 --cache-ram 0 and cache_prompt off, W4 "
            "cache_prompt on with --cache-ram 8192; W1/W4 warm: warm prompts x "
            f"{WARM_NEW_TOKENS} tokens; W2 one slot, warm request then one streamed request, "
            "timed by the client" + (f"; speculative decoding: {' '.join(extra)}" if extra else "")
        ),
        "server_timings": server_side,
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
    offline(args.workload_file, args.out)


if __name__ == "__main__":
    main()
