"""Command-line flags shared by every frontend that builds an engine."""

from __future__ import annotations

import argparse
from typing import Any


def add_engine_arguments(
    parser: argparse.ArgumentParser, *, positional_model: bool = False
) -> None:
    """Add ``--model``/``MODEL`` and the engine configuration flags."""
    if positional_model:
        parser.add_argument(
            "model",
            nargs="?",
            default="smollm2-135m-instruct",
            help="packaged short name, Hugging Face folder or GGUF file (default: %(default)s)",
        )
    else:
        parser.add_argument("--model", default="smollm2-135m-instruct", help="model to load")
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default=None, help="activations and KV cache"
    )
    group.add_argument(
        "--param-dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="weights, when not --dtype (bfloat16 with --dtype float32: bf16 matrix products)",
    )
    group.add_argument(
        "--kv-cache-dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="KV cache, when not --dtype",
    )
    group.add_argument("--max-model-len", type=int, default=None)
    group.add_argument("--max-num-seqs", type=int, default=None)
    group.add_argument("--max-num-batched-tokens", type=int, default=None)
    group.add_argument("--page-size", type=int, default=None)
    group.add_argument("--kv-cache-memory", type=int, default=None, help="bytes (CPU)")
    group.add_argument("--hbm-utilization", type=float, default=None)
    group.add_argument("--attention", default=None, help="attention backend (default: auto)")
    group.add_argument(
        "--matmul", default=None, help="backend of the weight products (default: auto)"
    )
    group.add_argument("--scheduler", default=None, help="scheduling policy (default: fcfs)")
    group.add_argument("--no-prefix-caching", action="store_true")
    group.add_argument(
        "--engine-thread-nice",
        type=int,
        default=None,
        help="nice value of the engine's step loop thread, -20..19 (below the process's needs "
        "CAP_SYS_NICE; default: unchanged)",
    )
    group.add_argument(
        "--num-speculative-tokens",
        type=int,
        default=None,
        help="draft tokens per step from n-gram prompt lookup, for greedy requests in small "
        "batches, 0..15 (default: 0, off)",
    )
    group.add_argument("--prompt-lookup-max", type=int, default=None)
    group.add_argument("--prompt-lookup-min", type=int, default=None)
    group.add_argument(
        "--speculative-max-seqs",
        type=int,
        default=None,
        help="draft only while at most this many requests run (default: 4)",
    )
    group.add_argument(
        "--huge-page-weights",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="on CPU under Linux, move the loaded weights into transparent huge pages "
        "(default: on)",
    )
    group.add_argument(
        "--use-aot-forward",
        action="store_true",
        default=None,
        help="compile every bucket at start-up, before the first request (a restart loads "
        "them from the compilation cache)",
    )
    group.add_argument(
        "--compilation-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep compiled steps on disk under $ESURGE_CACHE/xla, so a restart with the "
        "same settings compiles nothing (default: on)",
    )
    group.add_argument(
        "--async-scheduling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="plan the next step while the current one runs (default: on; on CPU only ahead "
        "of steps of at most 16 sequences)",
    )


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``eSurge(...)`` keywords the flags set (unset flags keep the defaults)."""
    names = (
        "dtype",
        "param_dtype",
        "kv_cache_dtype",
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "page_size",
        "kv_cache_memory",
        "hbm_utilization",
        "attention",
        "matmul",
        "scheduler",
        "engine_thread_nice",
        "num_speculative_tokens",
        "prompt_lookup_max",
        "prompt_lookup_min",
        "speculative_max_seqs",
        "use_aot_forward",
        "compilation_cache",
        "async_scheduling",
        "huge_page_weights",
    )
    kwargs = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.no_prefix_caching:
        kwargs["enable_prefix_caching"] = False
    return kwargs
