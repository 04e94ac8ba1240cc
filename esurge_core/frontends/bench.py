"""``esurge bench throughput ...``: offline throughput of the engine (see docs/PERFORMANCE.md)."""

from __future__ import annotations

import argparse
import json

from esurge_core.frontends.engine_args import add_engine_arguments, engine_kwargs


class BenchFrontend:
    """Benchmarks: ``throughput`` (offline, in-process) and ``serve`` (any OpenAI endpoint)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The ``throughput`` and ``serve`` sub-commands and their flags."""
        sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
        throughput = sub.add_parser("throughput", help="offline batch throughput")
        throughput.add_argument("--num-prompts", type=int, default=64)
        throughput.add_argument("--input-len", type=int, default=128)
        throughput.add_argument("--output-len", type=int, default=128)
        throughput.add_argument("--prompts-file", default=None, help="text (one per line) or JSON")
        throughput.add_argument("--seed", type=int, default=0)
        throughput.add_argument("--no-warmup", action="store_true")
        throughput.add_argument("--json", action="store_true", help="print the result as JSON")
        add_engine_arguments(throughput)

        serve = sub.add_parser("serve", help="load an OpenAI-compatible endpoint")
        serve.add_argument("--base-url", default="http://127.0.0.1:8000")
        serve.add_argument("--model", default="smollm2-135m-instruct", help="model field sent")
        serve.add_argument("--num-prompts", type=int, default=32)
        serve.add_argument("--input-len", type=int, default=128)
        serve.add_argument("--output-len", type=int, default=128)
        serve.add_argument("--vocab-size", type=int, default=49152, help="for random prompts")
        serve.add_argument("--prompts-file", default=None)
        serve.add_argument("--request-rate", type=float, default=float("inf"), help="Poisson req/s")
        serve.add_argument("--max-concurrency", type=int, default=None)
        serve.add_argument("--api-key", default=None)
        serve.add_argument("--seed", type=int, default=0)
        serve.add_argument("--slo-ttft-ms", type=float, default=None)
        serve.add_argument("--slo-tpot-ms", type=float, default=None)
        serve.add_argument("--json", action="store_true", help="print the result as JSON")

    def run(self, args: argparse.Namespace) -> int:
        """Run the chosen benchmark and print its result."""
        if args.bench == "serve":
            return self._run_serve(args)
        return self._run_throughput(args)

    def _run_serve(self, args: argparse.Namespace) -> int:
        import asyncio

        from esurge_core.bench.serve import run_serve_benchmark
        from esurge_core.bench.workload import file_prompts, random_token_prompts

        if args.prompts_file:
            prompts: list = file_prompts(args.prompts_file)[: args.num_prompts]
        else:
            prompts = random_token_prompts(
                args.num_prompts, args.input_len, args.vocab_size, args.seed
            )
        result = asyncio.run(
            run_serve_benchmark(
                args.base_url,
                args.model,
                prompts,
                args.output_len,
                request_rate=args.request_rate,
                max_concurrency=args.max_concurrency,
                api_key=args.api_key,
                seed=args.seed,
                slo_ttft_ms=args.slo_ttft_ms,
                slo_tpot_ms=args.slo_tpot_ms,
            )
        )
        print(json.dumps(result.as_dict()) if args.json else result.table())
        return 0 if result.completed else 1

    def _run_throughput(self, args: argparse.Namespace) -> int:
        from esurge_core.bench.throughput import run_throughput
        from esurge_core.bench.workload import file_prompts, random_token_prompts
        from esurge_core.engine.esurge import eSurge

        kwargs = engine_kwargs(args)
        kwargs.setdefault("max_num_seqs", min(args.num_prompts, 256))
        kwargs.setdefault("max_model_len", args.input_len + args.output_len + 16)
        with eSurge(args.model, **kwargs) as engine:
            special = frozenset(getattr(engine.tokenizer, "all_special_ids", []))

            def random_prompts(seed: int) -> list[list[int]]:
                return random_token_prompts(
                    args.num_prompts, args.input_len, engine.model.vocab_size, seed, special
                )

            if args.prompts_file:
                prompts = file_prompts(args.prompts_file)[: args.num_prompts]
            else:
                prompts = random_prompts(args.seed)
            warmup = None if args.no_warmup else random_prompts(args.seed + 1)
            result = run_throughput(engine, prompts, args.output_len, warmup)
        print(json.dumps(result.as_dict()) if args.json else result.table())
        return 0
