"""Time per output token of single streams with and without n-gram speculative decoding,
engines side by side in one process.

    .venv/bin/python benchmarks/speculative_times.py --drafts 0 4 5 9 --repeats 3
    .venv/bin/python benchmarks/speculative_times.py --drafts 0 5 --text chat

SmolLM2-135M-Instruct with bf16 weights and KV cache, as W1-W4 run it. One engine per
``--drafts`` value (0: no speculation), each warmed up on other prompts, then the same
streams through each engine in turn, ``--repeats`` times. ``--text w2`` streams W2's random
token prompt (greedy, ``ignore_eos``, 128 tokens: the model falls into a loop, which the
lookup predicts); ``--text chat`` six chat questions (text that does not repeat). Prints per
engine the median ms per output token after the first, the steps of its first stream, the
drafts verified and accepted, and whether its tokens equal those of the first engine
(docs/PERFORMANCE.md step 48; with bf16 weights a step of another shape may take another
token at a near-tie, docs/speculative_decoding.md).
"""

from __future__ import annotations

import argparse
import statistics

from compare_peers import prompts
from peers.esurge_peer import timed_stream_tokens, workload_engine

from esurge_core import SamplingParams
from esurge_core.host_malloc import reexec_with_tuned_malloc

CHAT_QUESTIONS = (
    "Explain in detail how a CPU executes an instruction.",
    "Write a short story about a lighthouse keeper.",
    "What are the main causes of the French Revolution?",
    "Describe the water cycle for a school report.",
    "Give me advice on learning to play the guitar.",
    "Summarise the plot of Romeo and Juliet.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--text", choices=("w2", "chat"), default="w2")
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-lookup-min", type=int, default=1)
    args = parser.parse_args()
    reexec_with_tuned_malloc()
    engines = {
        k: workload_engine(num_speculative_tokens=k, prompt_lookup_min=args.prompt_lookup_min)
        for k in args.drafts
    }
    if args.text == "w2":
        params = SamplingParams(temperature=0, max_tokens=args.output_len, ignore_eos=True)
        streams, warm = [prompts(1, 128, 1)[0]], prompts(1, 128, 101)[0]
    else:
        params = SamplingParams(temperature=0, max_tokens=args.output_len)
        chat = next(iter(engines.values())).apply_chat_template
        streams = [chat([{"role": "user", "content": q}]) for q in CHAT_QUESTIONS]
        warm = chat([{"role": "user", "content": "Say hello."}])
    try:
        for engine in engines.values():
            timed_stream_tokens(engine, warm, params)
        times: dict[int, list[float]] = {k: [] for k in engines}
        tokens: dict[int, list[list[int]]] = {k: [] for k in engines}
        steps: dict[int, int] = {}
        for repeat in range(args.repeats):
            for prompt in streams:
                for k, engine in engines.items():
                    before = engine.num_steps
                    _, per_token, out = timed_stream_tokens(engine, prompt, params)
                    times[k].append(per_token)
                    if repeat == 0:
                        tokens[k].append(out)
                        steps[k] = steps.get(k, 0) + engine.num_steps - before
        reference = tokens[args.drafts[0]]
        for k, engine in engines.items():
            same = sum(a == b for a, b in zip(tokens[k], reference, strict=True))
            metrics = engine.metrics.snapshot()
            print(
                f"drafts {k:2d}: {statistics.median(times[k]):6.2f} ms a token (median of "
                f"{len(times[k])}), {steps[k]} steps for the first pass, "
                f"{metrics.spec_decode_draft_tokens} drafts verified, "
                f"{metrics.spec_decode_accepted_tokens} accepted, "
                f"{same}/{len(reference)} streams equal to drafts {args.drafts[0]}'s"
            )
    finally:
        for engine in engines.values():
            engine.close()


if __name__ == "__main__":
    main()
