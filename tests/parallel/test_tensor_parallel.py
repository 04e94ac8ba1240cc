"""Tensor parallelism over 1, 2 and 4 fake CPU devices gives the unsharded model's output.

Each check runs in a subprocess with `--xla_force_host_platform_device_count` (see
subprocess_jax.py). The tiny configs have 4 query heads and 2 KV heads: tensor size 2 splits
the KV cache by KV head, tensor size 4 replicates it.
"""

from __future__ import annotations

import pytest

from tests.parallel.subprocess_jax import run_worker
from tests.parallel.tiny_configs import all_configs, llama4

TENSOR_SIZES = (1, 2, 4)
RUNS = [f"{name}/tp{tp}" for name in ("llama", "gemma3", "llama4") for tp in TENSOR_SIZES]


@pytest.fixture(scope="module")
def parity() -> dict:
    """Greedy generation of every tiny config at every tensor size, vs. unsharded."""
    args = {"configs": all_configs(), "tensor_sizes": list(TENSOR_SIZES)}
    return run_worker("tp_parity", args, device_count=4)


@pytest.fixture(scope="module")
def layout() -> dict:
    """Shardings and compiled-step collectives of the tiny Llama 4 at tensor sizes 2 and 4."""
    args = {"config": llama4(), "tensor_sizes": [2, 4]}
    return run_worker("inspect_sharding", args, device_count=4)


@pytest.mark.parametrize("run", RUNS)
def test_sharded_greedy_tokens_equal_the_unsharded_ones(parity, run):
    assert parity[run]["tokens_equal"], parity[run]


@pytest.mark.parametrize("run", RUNS)
def test_sharded_logits_are_within_1e_5_of_the_unsharded_ones(parity, run):
    assert parity[run]["max_logit_diff"] <= 1e-5


def test_kv_heads_are_split_only_when_they_divide_by_the_tensor_size(parity):
    assert [parity[f"llama/tp{tp}"]["kv_heads_sharded"] for tp in TENSOR_SIZES] == [
        False,
        True,
        False,
    ]


def test_attention_and_mlp_weights_are_split_over_the_tensor_axis(layout):
    tp2 = layout["2"]
    assert tp2["shard_shape"]["q"] == [64, 32]  # columns: 2 of 4 query heads x head_dim 16
    assert tp2["shard_shape"]["o"] == [32, 64]  # rows
    assert tp2["shard_shape"]["down"] == [64, 64]  # rows of the 128-wide MLP
    assert tp2["shard_devices"]["q"] == 2


def test_embedding_is_split_over_the_vocabulary(layout):
    assert layout["2"]["shard_shape"]["embed_tokens"] == [128, 64]
    assert layout["4"]["shard_shape"]["embed_tokens"] == [64, 64]


def test_kv_cache_is_split_on_axis_2_into_whole_kv_head_pairs(layout):
    tp2 = layout["2"]
    assert tp2["full_shape"]["kv_cache"] == [32, 4, 4, 16]  # 2 KV heads, K/V interleaved
    assert tp2["shard_shape"]["kv_cache"] == [32, 4, 2, 16]  # one (K, V) pair per device
    assert tp2["shard_shape"]["k"] == [64, 16]  # the k projection of that one KV head


@pytest.mark.parametrize("tp", ["2", "4"])
def test_kv_cache_bytes_per_device_follow_the_shard_and_the_cache_dtype(layout, tp):
    sizes = layout[tp]
    shard_elements = 1
    for n in sizes["shard_shape"]["kv_cache"]:
        shard_elements *= n
    per_layer_f32 = shard_elements * 4
    assert sizes["kv_cache_bytes_per_device"]["float32"] == per_layer_f32 * sizes["num_layers"]
    assert (
        sizes["kv_cache_bytes_per_device"]["bfloat16"] == per_layer_f32 // 2 * sizes["num_layers"]
    )


def test_kv_cache_and_kv_projections_are_replicated_with_fewer_kv_heads_than_devices(layout):
    tp4 = layout["4"]
    assert tp4["kv_heads_sharded"] is False
    assert tp4["shard_shape"]["kv_cache"] == tp4["full_shape"]["kv_cache"]
    assert tp4["shard_shape"]["k"] == tp4["full_shape"]["k"]
    assert tp4["shard_devices"]["kv_cache"] == 4


@pytest.mark.parametrize("tp", ["2", "4"])
def test_compiled_step_never_all_gathers_a_weight_or_the_kv_cache(layout, tp):
    assert layout[tp]["weight_sized_all_gathers"] == []


@pytest.mark.parametrize("tp", ["2", "4"])
def test_compiled_step_all_reduces_only_activations(layout, tp):
    # One all-reduce for the vocabulary-split embedding lookup, then one after each
    # attention output projection and each MLP down projection (XLA may merge some).
    step = layout[tp]
    assert 1 <= step["counts"]["all-reduce"] <= 1 + 2 * step["num_layers"]
    assert step["all_reduce_shapes"] == ["[16, 64]"]  # [padded tokens, hidden]


@pytest.mark.parametrize("tp", ["2", "4"])
def test_compiled_step_gathers_only_the_logits_rows(layout, tp):
    assert layout[tp]["all_gather_shapes"] == [[16, 256]]  # [rows, vocab]


def test_replicas_take_disjoint_rows_of_the_data_tensor_mesh():
    result = run_worker(
        "replicas", {"data_parallel_size": 2, "tensor_parallel_size": 2}, device_count=4
    )
    assert result["replicas"] == [[0, 1], [2, 3]]
