"""``esurge generate "prompt" ...``: batch generation, one completion per prompt."""

from __future__ import annotations

import argparse
import sys

from esurge_core.frontends.engine_args import add_engine_arguments, engine_kwargs


class GenerateFrontend:
    """Generate completions for prompts given as arguments or one per line on stdin."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Prompts and sampling flags."""
        parser.add_argument("prompts", nargs="*", help="prompts (default: one per stdin line)")
        parser.add_argument("--max-tokens", type=int, default=64)
        parser.add_argument("--temperature", type=float, default=0.0)
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--stream", action="store_true", help="stream a single prompt")
        add_engine_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        """Load the engine, generate, print each completion."""
        from esurge_core.engine.esurge import eSurge
        from esurge_core.sampling.params import SamplingParams

        prompts = args.prompts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not prompts:
            print("esurge generate: no prompt given", file=sys.stderr)
            return 2
        params = SamplingParams(
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        )
        with eSurge(args.model, **engine_kwargs(args)) as engine:
            if args.stream and len(prompts) == 1:
                for output in engine.stream(prompts[0], params):
                    print(output.outputs[0].delta_text, end="", flush=True)
                print()
                return 0
            outputs = engine.generate(prompts, params, use_tqdm=len(prompts) > 1)
            for output in outputs:
                if len(prompts) > 1:
                    print(f"--- {output.prompt!r}")
                print(output.outputs[0].text)
        return 0
