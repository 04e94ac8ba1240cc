"""``PackedWeight``: a weight matrix stored in the layout of one matmul backend's kernel.

A backend may re-arrange each weight it multiplies once, when the engine starts, instead of
in every step (``MatmulBackend.pack_weight``). The packed weight replaces the array in the
params pytree and reaches ``esurge_core.matmul.dispatch.matmul`` like any weight: the backend
that packed it computes the product from ``data``, and wherever XLA computes it (no backend
active, or the backend declines a shape) ``unpacked()`` restores the ``[K, N]`` matrix inside
the traced computation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True, eq=False)
class PackedWeight:
    """A ``[K, N]`` weight of ``dtype`` held as ``data`` in a backend's layout.

    Attributes:
        data: the packed array (the pytree's only leaf).
        shape: the logical shape ``(K, N)``: ``y = x @ w`` takes ``x [M, K]`` to ``[M, N]``.
        dtype: the logical element type (what ``unpacked()`` returns).
        layout: the name of the layout (the backend checks it before using ``data``).
        unpack: ``unpack(data, shape) -> [K, N]``, traceable (static, compared by identity).
    """

    data: jax.Array
    shape: tuple[int, int]
    dtype: Any
    layout: str
    unpack: Callable[[jax.Array, tuple[int, int]], jax.Array]

    def unpacked(self) -> jax.Array:
        """The ``[K, N]`` matrix (computed from ``data``; a copy under XLA)."""
        return self.unpack(self.data, self.shape)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def tree_flatten(self):
        return (self.data,), (self.shape, jnp.dtype(self.dtype).name, self.layout, self.unpack)

    @classmethod
    def tree_unflatten(cls, aux, children):
        shape, dtype, layout, unpack = aux
        return cls(children[0], shape, jnp.dtype(dtype), layout, unpack)
