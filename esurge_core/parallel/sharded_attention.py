"""`ShardedAttention`: an attention backend pinned to the tensor-parallel layout.

XLA's SPMD partitioner chooses the layout of every intermediate from the shardings it can
see. Inside attention it sees grouped-query reshapes ([tokens, q_heads] -> [tokens,
kv_heads, group]) and, when the KV cache is replicated (fewer KV heads than devices), it
may split the cache update by KV head and then all-gather the whole cache back to its
replicated output: a full-cache copy per layer per step. Wrapping the backend pins the
layouts at its boundary, so queries and outputs stay split by query head and the KV pages
keep exactly the cache's sharding, in and out of both kernel calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from esurge_core.parallel.mesh import TENSOR_AXIS


@dataclass(frozen=True)
class ShardedAttention:
    """The two kernel functions of `backend` with sharding constraints at their boundary.

    Attributes:
        backend: The selected attention backend (contract A).
        kv_cache: Sharding of a layer's KV pages (split by KV head, or replicated).
        kv_heads: Sharding of this step's keys/values [tokens, kv_heads, head_dim].
        q_heads: Sharding of queries and attention output [tokens, q_heads, head_dim].
    """

    backend: Any
    kv_cache: NamedSharding
    kv_heads: NamedSharding
    q_heads: NamedSharding

    @property
    def name(self) -> str:
        """The wrapped backend's name."""
        return getattr(self.backend, "name", type(self.backend).__name__)

    def ragged_paged_attention(
        self, queries: jax.Array, kv_pages: jax.Array, *args: Any, **kwargs: Any
    ) -> jax.Array:
        """The backend's attention, queries/output split by head, pages as the cache is."""
        queries = jax.lax.with_sharding_constraint(queries, self.q_heads)
        kv_pages = jax.lax.with_sharding_constraint(kv_pages, self.kv_cache)
        out = self.backend.ragged_paged_attention(queries, kv_pages, *args, **kwargs)
        return jax.lax.with_sharding_constraint(out, self.q_heads)

    def write_kv_pages(
        self, kv_pages: jax.Array, keys: jax.Array, values: jax.Array, slot_mapping: jax.Array
    ) -> jax.Array:
        """The backend's page write, keeping the pages in the cache's sharding."""
        kv_pages = jax.lax.with_sharding_constraint(kv_pages, self.kv_cache)
        keys = jax.lax.with_sharding_constraint(keys, self.kv_heads)
        values = jax.lax.with_sharding_constraint(values, self.kv_heads)
        out = self.backend.write_kv_pages(kv_pages, keys, values, slot_mapping)
        return jax.lax.with_sharding_constraint(out, self.kv_cache)


def shard_attention(backend: Any, kv_cache: NamedSharding, kv_heads_sharded: bool) -> Any:
    """Wrap `backend` for a mesh (returns it unchanged on a one-device tensor axis)."""
    mesh = kv_cache.mesh
    if mesh.shape[TENSOR_AXIS] == 1:
        return backend
    kv_axis = TENSOR_AXIS if kv_heads_sharded else None
    return ShardedAttention(
        backend=backend,
        kv_cache=kv_cache,
        kv_heads=NamedSharding(mesh, PartitionSpec(None, kv_axis, None)),
        q_heads=NamedSharding(mesh, PartitionSpec(None, TENSOR_AXIS, None)),
    )
