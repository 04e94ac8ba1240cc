"""W2-shaped streams with the ``cpu`` backend's greedy head on and off, in one process.

    .venv/bin/python benchmarks/greedy_head_times.py --pairs 12
    .venv/bin/python benchmarks/greedy_head_times.py --candidates --hf-folder /work/peers/smollm2-hf
    .venv/bin/python benchmarks/greedy_head_times.py --kernel-rows 1 2 4 8

Two engines (SmolLM2-135M-Instruct, bf16 weights and KV cache, as W1-W4 run it), one with
``ESURGE_CPU_GREEDY_HEAD=1`` (greedy tokens from the LM head's int8 screen, see
docs/matmul.md) and one with ``0`` (every logit computed), stream the same 128-token prompt
for 128 greedy tokens in turn, alternating which goes first; prints each one's mean time
between tokens per pair, the medians, how many pairs the screen won, and checks the tokens
are the same.

``--kernel-rows`` instead times the kernel alone against the packed product and the argmax
it replaces, on a random SmolLM2-sized head (576 x 49152) with 256 MB streamed between calls
(as the rest of a decode step streams its weights): median of 15 calls per row count.

``--candidates`` instead counts, for the final hidden rows of greedy decoding under Hugging
Face transformers (torch; the folder ``benchmarks/peers/build_hf_folder.py`` writes), how
many columns and 16-column vectors of the head the screen leaves for exact computation (the
kernel's bound, evaluated in numpy).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time


def _stream(engine, prompt: list[int], params) -> tuple[float, list[int]]:
    stamps: list[float] = []
    tokens: list[int] = []
    for out in engine.stream({"prompt_token_ids": prompt}, params):
        if out.outputs[0].delta_token_ids:
            stamps.append(time.perf_counter())
            tokens += out.outputs[0].delta_token_ids
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.mean(gaps) * 1e3, tokens


def compare(pairs: int) -> None:
    from peers.esurge_peer import workload_engine

    from esurge_core import SamplingParams
    from esurge_core.host_malloc import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    engines = {}
    for setting in ("on", "off"):
        os.environ["ESURGE_CPU_GREEDY_HEAD"] = "1" if setting == "on" else "0"
        engines[setting] = workload_engine()
    params = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
    for engine in engines.values():  # compile outside the timed streams
        _stream(engine, list(range(50, 178)), params)
    times: dict[str, list[float]] = {"on": [], "off": []}
    for pair in range(pairs):
        prompt = list(range(500 + pair, 628 + pair))
        order = ("on", "off") if pair % 2 == 0 else ("off", "on")
        tokens = {}
        for setting in order:
            ms, tokens[setting] = _stream(engines[setting], prompt, params)
            times[setting].append(ms)
        if tokens["on"] != tokens["off"]:
            raise RuntimeError(f"pair {pair}: the tokens differ with the screen on and off")
        print(
            f"pair {pair}: on {times['on'][-1]:.2f} ms, off {times['off'][-1]:.2f} ms", flush=True
        )
    for setting, values in times.items():
        print(f"greedy head {setting}: median {statistics.median(values):.2f} ms per token")
    wins = sum(a < b for a, b in zip(times["on"], times["off"]))
    print(f"the screen faster in {wins} of {pairs} pairs; tokens equal in every pair")
    for engine in engines.values():
        engine.close()


def kernel_rows(row_counts: list[int]) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from esurge_attention_cpu.bf16_pair_matmul import bf16_packed_matmul, pack_bf16_weight
    from esurge_attention_cpu.greedy_head import bf16_greedy_head, pack_greedy_screen

    from esurge_core.sampling.sampler import first_argmax

    rng = np.random.default_rng(0)
    k, n = 576, 49152
    packed = jax.jit(pack_bf16_weight)(
        jnp.asarray(rng.standard_normal((k, n)) * 0.05, jnp.bfloat16)
    )
    screen = pack_greedy_screen(packed, (k, n))
    flush = jnp.ones((64 << 20,), jnp.float32)
    stream = jax.jit(lambda a: a.sum())

    def product_then_argmax(x, rows):
        return first_argmax(bf16_packed_matmul(x, packed, rows, n=n, out_dtype=jnp.float32))

    ways = {
        "product + argmax": jax.jit(product_then_argmax),
        "screen": jax.jit(lambda x, rows: bf16_greedy_head(x, packed, screen, rows)),
    }
    x = jnp.asarray(rng.standard_normal((max(row_counts), k)), jnp.float32)
    for count in row_counts:
        rows = jnp.int32(count)
        medians = {}
        for name, way in ways.items():
            way(x, rows).block_until_ready()
            seconds = []
            for _ in range(15):
                stream(flush).block_until_ready()
                start = time.perf_counter()
                way(x, rows).block_until_ready()
                seconds.append(time.perf_counter() - start)
            medians[name] = statistics.median(seconds) * 1e3
        print(", ".join([f"{count} rows"] + [f"{k} {v:.2f} ms" for k, v in medians.items()]))


def candidates(hf_folder: str, prompts: int, new_tokens: int) -> None:
    import jax.numpy as jnp
    import numpy as np
    import torch
    from esurge_attention_cpu.bf16_pair_matmul import pack_bf16_weight
    from esurge_attention_cpu.greedy_head import pack_greedy_screen
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32)
    head = model.lm_head.weight.detach().to(torch.bfloat16).float().numpy().T  # [K, V]
    k, n = head.shape
    screen = pack_greedy_screen(pack_bf16_weight(jnp.asarray(head, jnp.bfloat16)), (k, n))
    q = np.asarray(screen.weights, np.float64).reshape(n // 64, -1, 64, 2)
    q = q.transpose(1, 3, 0, 2).reshape(-1, n)[:k]
    scale = np.asarray(screen.scale, np.float64)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(prompts):
        ids = torch.tensor([rng.integers(100, 20000, 128)])
        with torch.no_grad():
            out = model.generate(
                ids,
                max_new_tokens=new_tokens,
                do_sample=False,
                output_hidden_states=True,
                return_dict_in_generate=True,
            )
        rows += [step[-1][0, -1].numpy() for step in out.hidden_states[1:]]
    x = np.asarray(jnp.asarray(np.stack(rows), jnp.bfloat16), np.float64)
    columns, vectors = [], []
    for row in x:
        t = np.float32(np.abs(row).max() / 16383)
        approx = t * scale * (np.rint(row / t) @ q)
        bound = np.abs(row).sum() * np.asarray(screen.err_l1) + t * np.asarray(screen.err_t)
        kept = np.nonzero(approx + bound >= (approx - bound).max())[0]
        columns.append(len(kept))
        vectors.append(len(np.unique(kept // 16)))
    for name, counts in (("columns", columns), ("16-column vectors", vectors)):
        print(
            f"{name} left per row over {len(counts)} rows: median {np.median(counts):.0f}, "
            f"p90 {np.percentile(counts, 90):.0f}, p99 {np.percentile(counts, 99):.0f}, "
            f"max {max(counts)} (of {n if name == 'columns' else n // 16})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--candidates", action="store_true")
    parser.add_argument("--kernel-rows", type=int, nargs="+")
    parser.add_argument("--hf-folder", default="/work/peers/smollm2-hf")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.kernel_rows:
        kernel_rows(args.kernel_rows)
    elif args.candidates:
        candidates(args.hf_folder, args.prompts, args.new_tokens)
    else:
        compare(args.pairs)


if __name__ == "__main__":
    main()
