"""Logical axes -> mesh axes: which dimension of which weight is split over "tensor".

Every parameter of an eSurge model carries logical axis names (`CausalLM.logical_axes()`):
"vocab", "embed", "heads", "kv_heads", "mlp", "experts", "norm", "head_dim". Tensor
parallelism (Megatron style) splits

- "heads": q/o projections by query head, so attention runs locally per head block and the
  output projection ends in one all-reduce;
- "mlp": gate/up by column and down by row, so the MLP ends in one all-reduce;
- "vocab": the token embedding and the LM head;
- "kv_heads": k/v projections and the KV cache by KV head, but only when the KV heads
  divide evenly over the tensor axis. Otherwise (fewer KV heads than devices, or a
  remainder) k/v projections and the KV cache are replicated: every device computes and
  stores every KV head, so the cache takes tensor_parallel_size times the memory.

"embed", "norm", "head_dim" and "experts" stay whole ("experts" because the expert weights
[experts, embed, mlp] are already split on "mlp"; a mesh axis may appear once per weight).
Query heads that do not divide over the tensor axis are an error at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jax.sharding import PartitionSpec

from esurge_core.models.causal_lm import CausalLM
from esurge_core.parallel.errors import ParallelConfigError
from esurge_core.parallel.mesh import TENSOR_AXIS

#: Logical axes that tensor parallelism splits whenever they divide evenly.
TENSOR_SPLIT_AXES = ("vocab", "heads", "mlp")


@dataclass(frozen=True, slots=True)
class ShardingRules:
    """Which mesh axis each logical axis is split over (absent or None: replicated).

    Attributes:
        axis_map: Logical axis name -> mesh axis name.
        mesh_sizes: Size of each mesh axis named in `axis_map`.
        kv_heads_sharded: Whether KV heads (k/v projections, KV cache) are split.
    """

    axis_map: Mapping[str, str | None]
    mesh_sizes: Mapping[str, int]
    kv_heads_sharded: bool

    def partition_spec(self, axes: Sequence[str | None], shape: Sequence[int]) -> PartitionSpec:
        """The PartitionSpec of one array with these logical axes and this shape.

        A dimension stays whole when its mesh axis is already used by an earlier dimension
        of the same array, or when its size does not divide by the mesh axis size (e.g. a
        vocabulary of 50257 over 2 devices: that embedding is replicated).
        """
        used: set[str] = set()
        spec: list[str | None] = []
        for name, size in zip(axes, shape, strict=True):
            mesh_axis = self.axis_map.get(name) if name is not None else None
            if mesh_axis is None or mesh_axis in used or size % self.mesh_sizes[mesh_axis]:
                spec.append(None)
                continue
            used.add(mesh_axis)
            spec.append(mesh_axis)
        return PartitionSpec(*spec)


def check_tensor_parallel(model: CausalLM, tensor_parallel_size: int) -> None:
    """Check that `model` can be split over `tensor_parallel_size` devices.

    Raises:
        ParallelConfigError: the query heads do not divide by the tensor size (the message
            names both numbers and the sizes that would work).
    """
    heads = model.num_heads
    if heads % tensor_parallel_size:
        working = [t for t in range(1, heads + 1) if heads % t == 0]
        raise ParallelConfigError(
            f"tensor_parallel_size = {tensor_parallel_size} does not divide "
            f"num_attention_heads = {heads} of {model.architecture}; attention is split by "
            f"query head, so use one of {working}"
        )


def tensor_parallel_rules(model: CausalLM, tensor_parallel_size: int) -> ShardingRules:
    """The sharding rules of `model` over a "tensor" axis of `tensor_parallel_size` devices.

    Raises:
        ParallelConfigError: see `check_tensor_parallel`.
    """
    check_tensor_parallel(model, tensor_parallel_size)
    kv_sharded = tensor_parallel_size > 1 and model.num_kv_heads % tensor_parallel_size == 0
    axis_map: dict[str, str | None] = dict.fromkeys(TENSOR_SPLIT_AXES, TENSOR_AXIS)
    axis_map["kv_heads"] = TENSOR_AXIS if kv_sharded else None
    return ShardingRules(axis_map, {TENSOR_AXIS: tensor_parallel_size}, kv_sharded)
