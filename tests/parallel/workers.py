"""Programs the parallel tests run in subprocesses, each printing one JSON result line.

XLA_FLAGS (the number of fake CPU devices) and `jax.distributed` must be set before JAX
starts, so each check runs in a fresh interpreter: `python -m tests.parallel.workers
<command> <json-args>`. The last stdout line is the JSON result.

A check builds a model from a config dict with random weights, then generates greedily
with the paged mini-runner of the model tests, once unsharded and once per tensor size,
through `esurge_core.parallel` exactly as the runner uses it.
"""

from __future__ import annotations

import functools
import json
import sys

import jax
import numpy as np

from esurge_core.models import build_model
from esurge_core.models.causal_lm import CausalLM
from esurge_core.parallel import (
    ParallelConfig,
    build_mesh,
    collectives,
    initialize_distributed,
    plan_tensor_parallel,
    replica_meshes,
)
from tests.models.paged_batch import XLA_ATTENTION, PagedBatchRunner, _step

PROMPTS = {"a": [5, 17, 42, 99, 3, 250, 8], "b": [11, 200, 7, 64]}
DECODE_STEPS = 6


def random_params(model: CausalLM, seed: int = 0) -> dict:
    """Weights with a wide spread (0.15 normal; norms near their neutral value)."""
    rng = np.random.default_rng(seed)
    neutral = 0.0 if "Gemma" in model.architecture else 1.0
    tensors = {}
    for spec in model.param_specs():
        noise = rng.standard_normal(spec.hf_shape).astype(np.float32)
        norm = "norm" in spec.hf_name
        tensors[spec.hf_name] = neutral + 0.1 * noise if norm else 0.15 * noise
    return model.load_params(tensors, progress=False)


def sharded_runner(model: CausalLM, params: dict, plan, **sizes) -> PagedBatchRunner:
    """The mini-runner with its params, caches and step placed and compiled over `plan`."""
    runner = PagedBatchRunner(model, params, **sizes)
    if plan is None:
        return runner
    rep = plan.replicated
    runner.params = plan.shard_params(params)
    runner.caches = plan.init_kv_caches(sizes["num_pages"], sizes["page_size"])
    runner._step = jax.jit(
        functools.partial(_step, model, attention=plan.wrap_attention(XLA_ATTENTION)),
        in_shardings=(plan.param_shardings, plan.kv_cache_shardings, rep, rep, rep),
        out_shardings=(rep, plan.kv_cache_shardings),
        donate_argnums=(1,),
    )
    return runner


def generate(runner: PagedBatchRunner, prompts: dict[str, list[int]], steps: int):
    """Greedy tokens per prompt and the logits of every step (prefill rows, then decodes)."""
    out = runner.step(prompts)
    tokens = {name: [int(np.argmax(rows[-1]))] for name, rows in out.items()}
    logits = [np.concatenate([out[name] for name in prompts])]
    for _ in range(steps - 1):
        out = runner.step({name: [seq[-1]] for name, seq in tokens.items()})
        for name, rows in out.items():
            tokens[name].append(int(np.argmax(rows[-1])))
        logits.append(np.concatenate([out[name] for name in prompts]))
    return tokens, np.concatenate(logits)


def _sizes(model: CausalLM) -> dict:
    return dict(page_size=4, num_pages=32, max_tokens=16, max_seqs=2, pages_per_seq=8)


def tp_parity(args: dict) -> dict:
    """Greedy tokens and logits of each config at each tensor size vs. the unsharded run."""
    results = {}
    for name, config in args["configs"].items():
        model = build_model(config, "float32")
        params = random_params(model)
        sizes = _sizes(model)
        ref_tokens, ref_logits = generate(
            sharded_runner(model, params, None, **sizes), PROMPTS, DECODE_STEPS
        )
        for tp in args["tensor_sizes"]:
            mesh = build_mesh(ParallelConfig(tensor_parallel_size=tp))
            plan = plan_tensor_parallel(model, mesh)
            runner = sharded_runner(model, params, plan, **sizes)
            tokens, logits = generate(runner, PROMPTS, DECODE_STEPS)
            results[f"{name}/tp{tp}"] = {
                "tokens_equal": tokens == ref_tokens,
                "tokens": tokens,
                "max_logit_diff": float(np.max(np.abs(logits - ref_logits))),
                "kv_heads_sharded": plan.rules.kv_heads_sharded,
            }
    return results


def inspect_sharding(args: dict) -> dict:
    """Per tensor size: shardings of params and caches, collectives of the compiled step."""
    model = build_model(args["config"], "float32")
    return {str(tp): _inspect(model, tp) for tp in args["tensor_sizes"]}


def _inspect(model: CausalLM, tp: int) -> dict:
    plan = plan_tensor_parallel(model, build_mesh(ParallelConfig(tensor_parallel_size=tp)))
    runner = sharded_runner(model, random_params(model), plan, **_sizes(model))
    attn = runner.params["layers"][0]["attn"]
    arrays = {
        "q": attn["q"],
        "k": attn["k"],
        "o": attn["o"],
        "down": runner.params["layers"][0]["mlp"]["down"],
        "embed_tokens": runner.params["embed_tokens"],
        "kv_cache": runner.caches[0],
    }
    # A weight (or the cache) re-assembled every step shows up as an all-gather whose
    # result has that array's full shape.
    split = [*jax.tree.leaves(runner.params), *runner.caches]
    full_shapes = {
        tuple(arr.shape)
        for arr in split
        if arr.sharding.shard_shape(arr.shape) != arr.shape or arr is runner.caches[0]
    }
    pages, page_size = runner.caches[0].shape[:2]
    layout = {
        "kv_cache_bytes_per_device": {
            dtype: plan.kv_cache_bytes_per_device(pages, page_size, dtype)
            for dtype in ("float32", "bfloat16")
        },
        "num_layers": model.num_layers,
        "shard_shape": {k: list(a.sharding.shard_shape(a.shape)) for k, a in arrays.items()},
        "full_shape": {k: list(a.shape) for k, a in arrays.items()},
        "shard_devices": {
            k: len({s.device for s in a.addressable_shards}) for k, a in arrays.items()
        },
    }
    step, captured = runner._step, {}

    def capture(*step_args):
        captured["hlo"] = step.lower(*step_args).compile().as_text()
        return step(*step_args)

    runner._step = capture
    runner.step(PROMPTS)
    ops = collectives(captured["hlo"])
    return {
        **layout,
        "kv_heads_sharded": plan.rules.kv_heads_sharded,
        "counts": {kind: sum(op.kind == kind for op in ops) for kind in {op.kind for op in ops}},
        "weight_sized_all_gathers": [
            list(op.shapes[0])
            for op in ops
            if op.kind == "all-gather" and any(shape in full_shapes for shape in op.shapes)
        ],
        "all_gather_shapes": [list(op.shapes[0]) for op in ops if op.kind == "all-gather"],
        "all_reduce_shapes": sorted(
            {str(list(op.shapes[0])) for op in ops if op.kind == "all-reduce"}
        ),
        "num_layers": model.num_layers,
    }


def replicas(args: dict) -> dict:
    """Device ids of each replica's mesh for a (data, tensor) layout."""
    config = ParallelConfig(**args)
    return {
        "replicas": [
            [device.id for device in mesh.devices.flat]
            for mesh in replica_meshes(build_mesh(config))
        ]
    }


def smollm2(args: dict) -> dict:
    """Greedy tokens of SmolLM2-135M (real weights) unsharded and at each tensor size."""
    from esurge_core.engine.model_loading import load_model

    loaded = load_model("smollm2-135m-instruct", None, "float32", progress=False)
    model, params = loaded.model, loaded.params
    prompt = {"p": list(loaded.tokenizer.encode("The capital of France is"))}
    sizes = dict(page_size=4, num_pages=16, max_tokens=16, max_seqs=1, pages_per_seq=8)
    ref, _ = generate(sharded_runner(model, params, None, **sizes), prompt, args["steps"])
    out = {"reference": ref}
    for tp in args["tensor_sizes"]:
        plan = plan_tensor_parallel(model, build_mesh(ParallelConfig(tensor_parallel_size=tp)))
        tokens, _ = generate(sharded_runner(model, params, plan, **sizes), prompt, args["steps"])
        out[f"tp{tp}"] = tokens
        out[f"tp{tp}_kv_heads_sharded"] = plan.rules.kv_heads_sharded
    return out


def multihost(args: dict) -> dict:
    """Join a 2-process job (env ESURGE_*), run a tensor-parallel forward over the global mesh.

    Process 0 broadcasts the prompts (the leader schedules); every process returns the
    greedy tokens it sees, which must equal a single-process run.
    """
    from esurge_core.parallel import broadcast_from_leader, is_leader

    initialize_distributed()
    model = build_model(args["config"], "float32")
    params = random_params(model)
    prompts = broadcast_from_leader(
        {k: np.asarray(v, np.int32) for k, v in PROMPTS.items()} if is_leader() else None
    )
    prompts = {k: [int(t) for t in v] for k, v in prompts.items()}
    mesh = build_mesh(ParallelConfig(tensor_parallel_size=args["tp"]))
    plan = plan_tensor_parallel(model, mesh)
    sizes = _sizes(model)
    runner = sharded_runner(model, params, plan, **sizes)
    runner_step = runner._step

    def global_step(params, caches, ids, positions, metadata):
        host = jax.tree.map(np.asarray, (ids, positions, metadata))
        return runner_step(params, caches, *plan.put_replicated(host))

    runner._step = global_step
    tokens, logits = generate(runner, prompts, DECODE_STEPS)
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "global_devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "tokens": tokens,
        "logits_sum": float(np.sum(logits)),
    }


def single_process_tokens(args: dict) -> dict:
    """The unsharded greedy tokens of the multihost check's model (its oracle)."""
    model = build_model(args["config"], "float32")
    tokens, logits = generate(
        sharded_runner(model, random_params(model), None, **_sizes(model)), PROMPTS, DECODE_STEPS
    )
    return {"tokens": tokens, "logits_sum": float(np.sum(logits))}


COMMANDS = {
    "tp_parity": tp_parity,
    "inspect_sharding": inspect_sharding,
    "replicas": replicas,
    "smollm2": smollm2,
    "multihost": multihost,
    "single_process_tokens": single_process_tokens,
}

if __name__ == "__main__":
    result = COMMANDS[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(result))
