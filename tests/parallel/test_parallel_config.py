"""ParallelConfig, mesh sizing, sharding rules and the HLO collective reader (one device)."""

from __future__ import annotations

import pytest
from jax.sharding import PartitionSpec

from esurge_core.models import build_model
from esurge_core.parallel import (
    ParallelConfig,
    ParallelConfigError,
    build_mesh,
    collectives,
    count_by_kind,
    initialize_distributed,
    mesh_shape,
    tensor_parallel_rules,
)
from tests.parallel.tiny_configs import llama


def test_config_reads_multihost_coordinates_from_the_environment():
    env = {
        "ESURGE_COORDINATOR_ADDRESS": "esurge-0.esurge:6379",
        "ESURGE_NUM_PROCESSES": "4",
        "ESURGE_PROCESS_ID": "3",
        "ESURGE_TENSOR_PARALLEL_SIZE": "8",
    }
    config = ParallelConfig.from_env(env)
    assert (config.coordinator_address, config.num_processes, config.process_id) == (
        "esurge-0.esurge:6379",
        4,
        3,
    )
    assert config.tensor_parallel_size == 8
    assert config.is_multi_host


def test_config_reads_sharding_axis_dims_as_comma_separated_sizes():
    assert ParallelConfig.from_env({"ESURGE_SHARDING_AXIS_DIMS": "2, -1"}).sharding_axis_dims == (
        2,
        -1,
    )


def test_process_id_outside_the_job_is_an_error_naming_the_range():
    with pytest.raises(ParallelConfigError, match=r"process_id = 2 .* 0 \.\. 1"):
        ParallelConfig.from_env(
            {"ESURGE_NUM_PROCESSES": "2", "ESURGE_PROCESS_ID": "2"},
            coordinator_address="h:1",
        )


def test_multihost_without_coordinator_is_an_error():
    with pytest.raises(ParallelConfigError, match="coordinator_address"):
        ParallelConfig.from_env({"ESURGE_NUM_PROCESSES": "2"})


def test_non_numeric_environment_value_is_an_error_naming_the_field():
    with pytest.raises(ParallelConfigError, match="tensor_parallel_size = 'two'"):
        ParallelConfig.from_env({"ESURGE_TENSOR_PARALLEL_SIZE": "two"})


def test_single_host_config_does_not_initialise_jax_distributed():
    assert initialize_distributed(ParallelConfig()) is False


def test_mesh_shape_takes_data_and_tensor_sizes():
    assert mesh_shape(ParallelConfig(tensor_parallel_size=4, data_parallel_size=2), 8) == (2, 4)


def test_sharding_axis_dims_minus_one_takes_the_remaining_devices():
    assert mesh_shape(ParallelConfig(sharding_axis_dims=(2, -1)), 8) == (2, 4)


def test_mesh_larger_than_the_devices_is_an_error_naming_both_numbers():
    with pytest.raises(ParallelConfigError, match=r"2 x 4 = 8 devices, but only 4"):
        mesh_shape(ParallelConfig(tensor_parallel_size=4, data_parallel_size=2), 4)


def test_build_mesh_on_one_device_names_the_tensor_and_data_axes():
    mesh = build_mesh(ParallelConfig())
    assert mesh.axis_names == ("data", "tensor")
    assert dict(mesh.shape) == {"data": 1, "tensor": 1}


def test_query_heads_that_do_not_divide_are_an_error_naming_the_numbers():
    model = build_model(llama(), "float32")  # 4 query heads
    with pytest.raises(ParallelConfigError, match=r"tensor_parallel_size = 3 .* = 4 .*\[1, 2, 4\]"):
        tensor_parallel_rules(model, 3)


def test_rules_split_heads_mlp_and_vocab_but_not_embed_or_norms():
    rules = tensor_parallel_rules(build_model(llama(), "float32"), 2)
    assert rules.partition_spec(("embed", "heads"), (64, 64)) == PartitionSpec(None, "tensor")
    assert rules.partition_spec(("mlp", "embed"), (128, 64)) == PartitionSpec("tensor", None)
    assert rules.partition_spec(("vocab", "embed"), (256, 64)) == PartitionSpec("tensor", None)
    assert rules.partition_spec(("norm",), (64,)) == PartitionSpec(None)


def test_rules_replicate_a_dimension_that_does_not_divide():
    rules = tensor_parallel_rules(build_model(llama(), "float32"), 2)
    assert rules.partition_spec(("vocab", "embed"), (257, 64)) == PartitionSpec(None, None)


def test_rules_use_the_tensor_axis_once_per_array():
    rules = tensor_parallel_rules(build_model(llama(), "float32"), 2)
    spec = rules.partition_spec(("experts", "mlp", "vocab"), (4, 128, 256))
    assert spec == PartitionSpec(None, "tensor", None)


def test_kv_heads_stay_whole_when_fewer_than_the_tensor_size():
    rules = tensor_parallel_rules(build_model(llama(), "float32"), 4)  # 2 KV heads
    assert not rules.kv_heads_sharded
    assert rules.partition_spec(("embed", "kv_heads"), (64, 32)) == PartitionSpec(None, None)


HLO = """
  %all-reduce.3 = f32[16,64]{1,0} all-reduce(f32[16,64]{1,0} %dot.1), channel_id=1
  %all-gather = f32[16,256]{0,1} all-gather(%wrapped_copy.6), channel_id=7, dimensions={1}
  %ars = (f32[8]{0}, f32[8]{0}) all-reduce-start(f32[8]{0} %a, f32[8]{0} %b), channel_id=2
  %add.1 = f32[16,64]{1,0} add(%x, %y)
"""


def test_collectives_reads_kind_and_result_shapes_from_hlo():
    ops = collectives(HLO)
    assert [(op.kind, op.shapes) for op in ops] == [
        ("all-reduce", ((16, 64),)),
        ("all-gather", ((16, 256),)),
        ("all-reduce", ((8,), (8,))),
    ]
    assert ops[1].num_elements == 16 * 256


def test_count_by_kind_counts_each_collective_once():
    assert count_by_kind(HLO) == {"all-reduce": 2, "all-gather": 1}
