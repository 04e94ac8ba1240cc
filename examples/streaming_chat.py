"""A streaming chat application on eSurge.

    python examples/streaming_chat.py --model smollm2-135m-instruct

Type a message, watch the answer stream in; an empty line or Ctrl-D quits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from esurge_core.engine.esurge import eSurge
from esurge_core.sampling.params import SamplingParams


def stream_reply(
    engine: eSurge,
    messages: list[dict[str, str]],
    params: SamplingParams,
    write: Callable[[str], object] = sys.stdout.write,
) -> str:
    """Stream the assistant's reply to ``messages`` through ``write``; return the whole reply."""
    reply = ""
    for output in engine.chat(messages, params, stream=True):
        delta = output.outputs[0].delta_text
        reply += delta
        write(delta)
    return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()
    params = SamplingParams(temperature=0.7, max_tokens=256)
    messages: list[dict[str, str]] = []
    with eSurge(args.model, max_model_len=args.max_model_len) as engine:
        for line in sys.stdin:
            if not line.strip():
                break
            messages.append({"role": "user", "content": line.strip()})
            reply = stream_reply(engine, messages, params)
            print(flush=True)
            messages.append({"role": "assistant", "content": reply})


if __name__ == "__main__":
    main()
