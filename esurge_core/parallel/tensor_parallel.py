"""`TensorParallelPlan`: the shardings of one engine's params, KV caches and step inputs.

The plan is what the runner needs to compile its step once over a mesh:

    plan = plan_tensor_parallel(model, mesh)
    params = plan.shard_params(params)
    attention = plan.wrap_attention(attention)     # closed over by step_fn, like today
    kv_caches = plan.init_kv_caches(num_pages, page_size)
    step = jax.jit(step_fn,
                   in_shardings=(plan.param_shardings, plan.kv_cache_shardings,
                                 plan.replicated, plan.replicated),
                   out_shardings=(plan.kv_cache_shardings, plan.replicated),
                   donate_argnums=(1,))

Step inputs (token ids, positions, page tables, sampling parameters) are small and
replicated; XLA's SPMD partitioner splits the compute from the weight shardings, and the
only collectives a dense step needs are the all-reduces after the attention output
projection and the MLP down projection of each layer, plus one for the vocabulary-split
embedding lookup and an all-gather of the (small) logits rows (see docs/scaling.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from esurge_core.models.causal_lm import CausalLM
from esurge_core.models.fused_projections import split_projections
from esurge_core.models.params import ParamSpec, transpose, tree_from_specs
from esurge_core.parallel.mesh import TENSOR_AXIS, tensor_parallel_size
from esurge_core.parallel.sharded_attention import shard_attention
from esurge_core.parallel.sharding_rules import ShardingRules, tensor_parallel_rules


def put_global(value: Any, sharding: NamedSharding) -> jax.Array:
    """Place a host value (same on every process) on the mesh with `sharding`.

    Single-process this is `jax.device_put`; in a multi-host job each process fills only
    its own devices' shards from its copy (`jax.make_array_from_callback`), so a mesh that
    spans hosts needs no cross-host transfer of weights.
    """
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


@dataclass(frozen=True)
class TensorParallelPlan:
    """Shardings of one model over one engine's mesh (build with `plan_tensor_parallel`).

    Attributes:
        model: The model.
        mesh: The engine's ("data", "tensor") mesh.
        rules: Logical axis -> mesh axis rules of this model at this tensor size.
        param_shardings: Pytree parallel to the params, a `NamedSharding` per array.
        kv_cache_sharding: Sharding of each layer's cache [pages, page_size, 2*kv, hd]:
            split on axis 2 by KV head when `rules.kv_heads_sharded`, else replicated.
        replicated: The fully replicated sharding (step inputs and outputs).
    """

    model: CausalLM
    mesh: Mesh
    rules: ShardingRules
    param_shardings: Any
    kv_cache_sharding: NamedSharding
    replicated: NamedSharding

    @property
    def kv_cache_shardings(self) -> tuple[NamedSharding, ...]:
        """One `kv_cache_sharding` per layer (the structure of the `kv_caches` tuple)."""
        return (self.kv_cache_sharding,) * self.model.num_layers

    def shard_params(self, params: dict) -> dict:
        """Place the params on the mesh, each array split by its logical axes.

        Fused projections (``fuse_projections``: q/k/v, gate/up) are taken apart first: heads
        and columns are sharded one projection at a time.
        """
        params = split_projections(params, self.model.param_specs())
        return jax.tree.map(put_global, params, self.param_shardings)

    def shard_kv_caches(self, kv_caches: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        """Place existing per-layer caches on the mesh with `kv_cache_sharding`."""
        return tuple(put_global(cache, self.kv_cache_sharding) for cache in kv_caches)

    def init_kv_caches(
        self, num_pages: int, page_size: int, dtype: Any = None
    ) -> tuple[jax.Array, ...]:
        """Allocate zeroed per-layer caches directly in their shards (no full copy anywhere),
        in ``dtype`` (default: the model dtype)."""
        shape = self.model.kv_cache_shape(num_pages, page_size)
        dtype = self.model.dtype if dtype is None else jnp.dtype(dtype)
        zeros = jax.jit(
            lambda: tuple(jnp.zeros(shape, dtype) for _ in range(self.model.num_layers)),
            out_shardings=self.kv_cache_shardings,
        )
        return zeros()

    def wrap_attention(self, backend: Any) -> Any:
        """The attention backend to hand the model: pinned to this plan's layouts.

        Without it the partitioner may all-gather a replicated KV cache every layer.
        """
        return shard_attention(backend, self.kv_cache_sharding, self.rules.kv_heads_sharded)

    def put_replicated(self, tree: Any) -> Any:
        """Place a pytree of host arrays (step inputs) on every device of the mesh."""
        return jax.tree.map(lambda leaf: put_global(leaf, self.replicated), tree)

    def kv_cache_bytes_per_device(self, num_pages: int, page_size: int, dtype: Any = None) -> int:
        """Bytes of all layers' KV caches held by each device (for page-count sizing), in
        ``dtype`` (default: the model dtype), as ``init_kv_caches`` allocates them."""
        shape = self.model.kv_cache_shape(num_pages, page_size)
        itemsize = (self.model.dtype if dtype is None else jnp.dtype(dtype)).itemsize
        total = int(np.prod(shape)) * itemsize * self.model.num_layers
        split = tensor_parallel_size(self.mesh) if self.rules.kv_heads_sharded else 1
        return total // split


def param_shape(spec: ParamSpec) -> tuple[int, ...]:
    """The shape of a parameter in the params pytree (after its checkpoint conversion)."""
    if spec.convert is transpose:
        return tuple(reversed(spec.hf_shape))
    if len(spec.hf_shape) == len(spec.axes) and spec.convert.__name__ == "_identity":
        return spec.hf_shape
    # Other conversions (e.g. splitting a fused expert tensor): run them on int8 zeros.
    return spec.convert(np.zeros(spec.hf_shape, np.int8)).shape


def plan_tensor_parallel(model: CausalLM, mesh: Mesh) -> TensorParallelPlan:
    """Build the shardings of `model` over `mesh` (its "tensor" axis splits the model).

    Raises:
        ParallelConfigError: the query heads do not divide by the tensor axis size.
    """
    rules = tensor_parallel_rules(model, tensor_parallel_size(mesh))
    specs = model.param_specs()
    param_shardings = tree_from_specs(
        specs,
        lambda spec: NamedSharding(mesh, rules.partition_spec(spec.axes, param_shape(spec))),
    )
    kv_axis = TENSOR_AXIS if rules.kv_heads_sharded else None
    kv_sharding = NamedSharding(mesh, PartitionSpec(None, None, kv_axis, None))
    return TensorParallelPlan(
        model=model,
        mesh=mesh,
        rules=rules,
        param_shardings=param_shardings,
        kv_cache_sharding=kv_sharding,
        replicated=NamedSharding(mesh, PartitionSpec()),
    )
