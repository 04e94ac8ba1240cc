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
from functools import partial
from typing import Any

import jax


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["data"],
    meta_fields=["shape", "dtype", "layout", "unpack"],
)  # flattened in C++: a Python tree_flatten would cost ~2 us per weight on every step call
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
