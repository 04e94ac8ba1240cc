"""The interface every matmul backend plugin implements, and the core's own ``xla`` backend.

A model multiplies activations by its weights through ``esurge_core.matmul.dispatch.matmul``.
While the model runner traces its step it activates the selected backend, which computes every
product it ``handles`` and leaves the others to XLA. Its registered loader returns a factory;
calling it returns an object with the two methods below, both traceable (every keyword
argument static).

Semantics every backend keeps: ``y = x @ w`` (or ``x @ w.T`` with ``transpose_w``) with the
product's inputs in ``w``'s dtype (``x`` is rounded to it), sums at least as wide as fp32 when
``out_dtype`` is fp32, and ``y`` in ``out_dtype``. Only the first ``num_rows`` rows of ``x``
are real (the rest pad the step to its bucket): their results must be exact to the semantics,
the others are free (a backend may return zeros there).

A backend may also keep weights in its own layout: it names the layout in ``packed_layout``
and defines ``pack_weight(w) -> PackedWeight | None``, which the engine calls once per weight
the model multiplies only through ``matmul`` (``[K, N]`` arrays; see
``esurge_core.matmul.packed_weight``), storing what it returns in place of the array. Its
``handles`` then receives the ``PackedWeight`` itself (logical ``shape`` and ``dtype``; its
``data`` is not to be read there), and its ``matmul`` receives it too (never with
``transpose_w``); products it declines, and every product while
another backend is active, are computed from ``unpacked()``. Such a backend also defines
``packs_weight(w: jax.ShapeDtypeStruct) -> bool`` (whether ``pack_weight`` would pack a weight
of that shape and dtype), which the engine uses to size its memory before packing.

A backend may also fuse a gated MLP's gate/up product with its activation: it then defines
``handles_gated(x, w, *, activation: str, out_dtype) -> bool`` and ``gated_matmul(x, w,
num_rows, *, activation: str, out_dtype)``, returning ``act(x @ w[:, :N/2]) * (x @ w[:,
N/2:])`` ``[M, N / 2]`` for an activation named as in ``esurge_core.models.activations``
(``silu``, ``gelu_tanh``, ...), with the product's semantics above and the activation in fp32
where ``out_dtype`` is fp32 (``esurge_core.matmul.dispatch.gated_matmul``).

A backend may also give a step's greedy tokens straight from the hidden rows without
computing every logit (``pack_greedy_head``, ``greedy_head_bytes``, ``takes_greedy_head``,
``greedy_head``; see ``esurge_core.matmul.greedy_head``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jax import lax


@runtime_checkable
class MatmulBackend(Protocol):
    """Computes weight products ``[M, K] x [K, N]`` (or ``[N, K]`` transposed)."""

    name: str

    def handles(
        self, x: jax.ShapeDtypeStruct, w: jax.ShapeDtypeStruct, *, transpose_w: bool, out_dtype
    ) -> bool:
        """Whether this backend computes this product (static shapes and dtypes only)."""
        ...

    def matmul(
        self, x: jax.Array, w: jax.Array, num_rows: jax.Array, *, transpose_w: bool, out_dtype
    ) -> jax.Array:
        """``x @ w`` (``x @ w.T``) for the first ``num_rows`` (``int32[]``) rows of ``x``."""
        ...


def xla_matmul(
    x: jax.Array, w: jax.Array, *, transpose_w: bool = False, out_dtype=None
) -> jax.Array:
    """The product computed by XLA (what every product falls back to)."""
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    if not transpose_w and x.dtype == w.dtype == out_dtype:
        return x @ w
    contract = ((1,), (1 if transpose_w else 0,))
    return lax.dot_general(
        x.astype(w.dtype), w, (contract, ((), ())), preferred_element_type=out_dtype
    )


class XLAMatmulBackend:
    """Every product through XLA's dot (the default off CPU, and the reference)."""

    name = "xla"

    def handles(self, x, w, *, transpose_w: bool, out_dtype) -> bool:
        return True

    def matmul(self, x, w, num_rows, *, transpose_w: bool, out_dtype) -> jax.Array:
        return xla_matmul(x, w, transpose_w=transpose_w, out_dtype=out_dtype)
