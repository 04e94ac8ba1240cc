"""``matmul``: the one entry point of the models' weight products, and the active backend;
``gated_matmul``: a gated MLP's gate/up product with its activation, which a backend may fuse.

The model runner wraps the tracing of its step in ``use_matmul_backend(backend, num_rows)``:
inside it, each product the backend ``handles`` is traced as the backend's computation, told
how many rows of the padded step are real. Outside (a model called directly, as the tests and
reference comparisons do) and for products the backend declines, XLA computes the product.
The activation is a context variable read at trace time, so it costs nothing per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from esurge_core.matmul.backend import MatmulBackend, xla_matmul
from esurge_core.matmul.packed_weight import PackedWeight
from esurge_core.param_paths import node_at


@dataclass(frozen=True, slots=True)
class _Active:
    backend: MatmulBackend
    num_rows: jax.Array  # int32[]: rows of the step that are real


_active: ContextVar[_Active | None] = ContextVar("esurge_matmul_backend", default=None)


@contextmanager
def use_matmul_backend(backend: MatmulBackend | None, num_rows: jax.Array) -> Iterator[None]:
    """Route products traced inside the block to ``backend`` (``None``: XLA for all).

    ``num_rows`` (a traced ``int32`` scalar) is how many leading rows of every product's
    activations are real; the rest pad the step to its bucket.
    """
    token = _active.set(
        None if backend is None else _Active(backend, jnp.asarray(num_rows, jnp.int32))
    )
    try:
        yield
    finally:
        _active.reset(token)


def active_backend() -> MatmulBackend | None:
    """The backend ``use_matmul_backend`` made active for the tracing in progress, if any."""
    active = _active.get()
    return None if active is None else active.backend


def matmul(
    x: jax.Array, w: jax.Array | PackedWeight, *, transpose_w: bool = False, out_dtype=None
) -> jax.Array:
    """``x @ w`` (``x @ w.T`` with ``transpose_w``) with inputs in ``w``'s dtype, accumulated
    in fp32 where ``out_dtype`` (default: ``x``'s dtype) is fp32, returned in ``out_dtype``.

    With equal dtypes this is plain ``x @ w``. With bf16 weights and fp32 activations the
    activations are rounded to bf16 for the product (never the weights widened, which would
    copy them every step) and the result comes back in fp32. ``w`` may be a ``PackedWeight``
    (a backend's layout; see ``pack_matmul_weights``), never with ``transpose_w``.
    """
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    active = _active.get()
    if isinstance(w, PackedWeight):
        if transpose_w:
            raise ValueError("matmul: a PackedWeight is stored [K, N]; transpose_w is not allowed")
        if active is None or getattr(active.backend, "packed_layout", None) != w.layout:
            w = w.unpacked()  # only the backend that packed it reads the layout
    if x.ndim == 2 and active is not None:
        spec_x = jax.ShapeDtypeStruct(x.shape, x.dtype)
        # A weight this backend packed is shown as itself (logical shape and dtype, and the
        # backend can tell its own layout from a plain array of the same shape).
        spec_w = w if isinstance(w, PackedWeight) else jax.ShapeDtypeStruct(w.shape, w.dtype)
        if active.backend.handles(spec_x, spec_w, transpose_w=transpose_w, out_dtype=out_dtype):
            return active.backend.matmul(
                x, w, active.num_rows, transpose_w=transpose_w, out_dtype=out_dtype
            )
    if isinstance(w, PackedWeight):  # its backend declined this product
        w = w.unpacked()
    return xla_matmul(x, w, transpose_w=transpose_w, out_dtype=out_dtype)


def gated_matmul(
    x: jax.Array, w: jax.Array | PackedWeight, act: Callable[[jax.Array], jax.Array]
) -> jax.Array:
    """``act(gate) * up`` where ``[gate | up] = matmul(x, w)``: a gated MLP's fused gate/up
    weight ``w [K, N]`` (the gate's columns first, the up projection's last).

    The active backend computes it in one step where it offers ``gated_matmul`` and
    ``handles_gated`` takes this product (``act``'s ``name``, see
    ``esurge_core.models.activations.Activation``), with the semantics of ``matmul``
    followed by ``act`` in fp32 where the result is fp32; else the product goes through
    ``matmul`` and XLA applies ``act``.
    """
    active = _active.get()
    name = getattr(act, "name", None)
    fused = getattr(active.backend, "gated_matmul", None) if active is not None else None
    handles = getattr(active.backend, "handles_gated", None) if active is not None else None
    if fused is not None and handles is not None and name is not None and x.ndim == 2:
        spec_x = jax.ShapeDtypeStruct(x.shape, x.dtype)
        spec_w = w if isinstance(w, PackedWeight) else jax.ShapeDtypeStruct(w.shape, w.dtype)
        if handles(spec_x, spec_w, activation=name, out_dtype=x.dtype):
            return fused(x, w, active.num_rows, activation=name, out_dtype=x.dtype)
    gate_up = matmul(x, w)
    half = gate_up.shape[-1] // 2
    return act(gate_up[..., :half]) * gate_up[..., half:]


def pack_matmul_weights(
    params: Any,
    paths: Iterable[tuple],
    backend: MatmulBackend | None,
    *,
    tied_lm_head: tuple[tuple, tuple] | None = None,
):
    """``params`` with each weight at ``paths`` replaced by ``backend.pack_weight(weight)``
    where the backend packs it (``None`` from ``pack_weight``, or a backend without the
    method: the array stays). The model must multiply those weights only through ``matmul``.

    ``tied_lm_head`` = ``(embedding_path, head_path)``: a model whose LM head is its token
    embedding ``[V, D]`` multiplied transposed also gets, at ``head_path``, the backend's
    packing of ``embedding.T`` (``[D, V]``) where the backend packs it: a second copy of the
    table (the embedding lookup keeps the original), which the packed kernel streams faster
    than any product can read the transposed table (``packed_lm_head_bytes`` sizes it).
    """
    pack = getattr(backend, "pack_weight", None)
    if pack is None:
        return params
    params = jax.tree.map(lambda leaf: leaf, params)  # new containers, the same arrays
    for path in paths:
        node = node_at(params, path[:-1])
        packed = pack(node[path[-1]])
        if packed is not None:
            node[path[-1]] = packed
    if tied_lm_head is not None:
        embedding_path, head_path = tied_lm_head
        packed = pack(node_at(params, embedding_path).T)
        if packed is not None:
            node_at(params, head_path[:-1])[head_path[-1]] = packed
    return params


def packed_lm_head_bytes(
    params: Any, tied_lm_head: tuple[tuple, tuple] | None, backend: MatmulBackend | None
) -> int:
    """Bytes ``pack_matmul_weights`` adds for ``tied_lm_head`` with ``backend`` (0: none)."""
    packs = getattr(backend, "packs_weight", None)
    if tied_lm_head is None or packs is None:
        return 0
    embedding = node_at(params, tied_lm_head[0])
    head = jax.ShapeDtypeStruct(embedding.shape[::-1], embedding.dtype)
    return int(embedding.nbytes) if packs(head) else 0
