"""``esurge chat``: an interactive, streaming chat in the terminal."""

from __future__ import annotations

import argparse
import sys

from esurge_core.frontends.engine_args import add_engine_arguments, engine_kwargs


class ChatFrontend:
    """Read a user turn per line, stream the assistant's answer; ``/exit`` or EOF quits."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """System prompt and sampling flags."""
        parser.add_argument("--system", default=None, help="system prompt")
        parser.add_argument("--max-tokens", type=int, default=256)
        parser.add_argument("--temperature", type=float, default=0.7)
        parser.add_argument("--seed", type=int, default=None)
        add_engine_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        """The read-stream loop; history is kept for the whole session."""
        from esurge_core.engine.esurge import eSurge
        from esurge_core.sampling.params import SamplingParams

        params = SamplingParams(
            max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
        )
        messages = [{"role": "system", "content": args.system}] if args.system else []
        interactive = sys.stdin.isatty()
        with eSurge(args.model, **engine_kwargs(args)) as engine:
            while True:
                if interactive:
                    print("you> ", end="", flush=True)
                line = sys.stdin.readline()
                if not line or line.strip() in {"/exit", "/quit"}:
                    return 0
                if not line.strip():
                    continue
                messages.append({"role": "user", "content": line.strip()})
                print("assistant> ", end="", flush=True)
                reply = ""
                for output in engine.chat(messages, params, stream=True):
                    delta = output.outputs[0].delta_text
                    reply += delta
                    print(delta, end="", flush=True)
                print()
                messages.append({"role": "assistant", "content": reply})
