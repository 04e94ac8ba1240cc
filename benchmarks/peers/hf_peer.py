"""Hugging Face transformers peer of the eSurge benchmark (issue 9): offline workloads only.

Runs ``model.generate`` (PyTorch CPU, eager, batched with a dynamic KV cache) on the Hugging
Face folder built from the packaged SmolLM2 GGUF, so it computes on the same dequantised weights
as every other peer. Run it with an interpreter that has torch and transformers (never the
eSurge core: this file imports only the standard library, torch and transformers):

    /work/venv/bin/python benchmarks/peers/hf_peer.py offline --workload-file W.json --out O.json

Workloads (see the peer contract in the driver ``benchmarks/compare_peers.py``):
* W1: all prompts in one ``generate`` call, greedy, exactly ``output_len`` new tokens each
  (``min_new_tokens`` = ``max_new_tokens``, so EOS cannot stop a row early);
* W2: one prompt; a streamer stamps the first generated token (TTFT) and the last one.
W4 is not run: transformers has no prefix cache shared across requests, so a W4 number would
only repeat W1 with longer prompts. transformers ships no OpenAI-compatible server either, so
this peer has no ``server_command`` (no W3).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

PEER = "hf"
PRECISIONS = ("float32", "bfloat16")
WARM_NEW_TOKENS = 4


class FirstAndLastTokenTimer:
    """A ``generate`` streamer that records when the first and the last new token arrive.

    transformers calls ``put`` once with the prompt, then once per generated step; only the
    calls after the prompt are generated tokens.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.steps = 0
        self._saw_prompt = False

    def put(self, value: Any) -> None:
        """Stamp a generated step (the first call carries the prompt and is skipped)."""
        if not self._saw_prompt:
            self._saw_prompt = True
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.steps += 1

    def end(self) -> None:
        """Called by ``generate`` when it finishes; nothing to flush."""


def load_model(folder: str, precision: str):
    """Load the Hugging Face folder in eval mode at ``precision`` ("float32" or "bfloat16").

    The folder's config still names the GGUF it was dequantised from (``quantization_config``
    with ``quant_method: gguf``); it is dropped so transformers loads plain tensors without a
    GGUF quantizer in the way.
    """
    import torch
    import transformers

    if precision not in PRECISIONS:
        raise ValueError(
            f"hf peer runs precision float32 or bfloat16, not {precision!r}; "
            "set the workload's precision to one of those"
        )
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, config=config, dtype=dtype, local_files_only=True
    )
    return model.eval()


def left_padded(batch: list[list[int]], pad_id: int):
    """Token ids and attention mask for ``batch``, left-padded to its longest prompt."""
    import torch

    width = max(len(prompt) for prompt in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, prompt in enumerate(batch):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def generate(model, batch: list[list[int]], new_tokens: int, streamer=None):
    """Greedy ``generate`` of exactly ``new_tokens`` for every prompt of ``batch``."""
    import torch

    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    ids, mask = left_padded(batch, pad_id)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            streamer=streamer,
        )
    generated = out.shape[1] - ids.shape[1]
    if generated != new_tokens:
        raise RuntimeError(f"generate returned {generated} new tokens, expected {new_tokens}")
    return out


def run_w1(model, spec: dict) -> float:
    """W1 output tokens/s: every prompt in one timed ``generate`` call, after a warm call."""
    generate(model, spec["warm"], WARM_NEW_TOKENS)
    start = time.perf_counter()
    generate(model, spec["prompts"], spec["output_len"])
    elapsed = time.perf_counter() - start
    return len(spec["prompts"]) * spec["output_len"] / elapsed


def run_w2(model, spec: dict) -> tuple[float, float]:
    """W2 (TTFT ms, ms per output token) of one prompt, after a warm request."""
    output_len = spec["output_len"]
    if output_len < 2:
        raise ValueError(f"W2 output_len must be at least 2 to time decode, got {output_len}")
    generate(model, [spec["warm"]], output_len)
    timer = FirstAndLastTokenTimer()
    generate(model, [spec["prompt"]], output_len, streamer=timer)
    if timer.first is None or timer.last is None or timer.steps != output_len:
        raise RuntimeError(f"streamer saw {timer.steps} generated steps, expected {output_len}")
    ttft = timer.first - timer.start
    total = timer.last - timer.start
    return ttft * 1000, (total - ttft) * 1000 / (output_len - 1)


def offline(workload_file: Path, out: Path) -> dict:
    """Run the workloads named in ``workload_file`` and write the result rows to ``out``."""
    import torch
    import transformers

    workload = json.loads(workload_file.read_text())
    precision = workload.get("precision", "float32")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = load_model(workload["hf_folder"], precision)
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

    if "W1" in specs:
        add("W1", "output tokens/s", run_w1(model, specs["W1"]), "tok/s")
    if "W2" in specs:
        ttft, per_token = run_w2(model, specs["W2"])
        add("W2", "TTFT", ttft, "ms")
        add("W2", "per output token", per_token, "ms")
    if "W4" in specs:
        print(f"{PEER}: W4 skipped (no cross-request prefix cache in transformers)", flush=True)
    result = {
        "peer": PEER,
        "version": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "settings": (
            f"model.generate, eager PyTorch CPU, torch threads {threads}, dtype {precision}, "
            "DynamicCache, greedy, min_new_tokens=max_new_tokens=output_len, all W1 prompts "
            f"in one left-padded batch; warm-up: W1 warm batch x {WARM_NEW_TOKENS} tokens, W2 "
            "one full warm request; W2 timed by a streamer; no W4 (no prefix cache), no W3"
        ),
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    """Command line: ``offline --workload-file F --out OUT.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("offline", help="run W1/W2 from the workload file")
    run.add_argument("--workload-file", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    offline(args.workload_file, args.out)


if __name__ == "__main__":
    main()
