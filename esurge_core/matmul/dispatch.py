"""``matmul``: the one entry point of the models' weight products, and the active backend.

The model runner wraps the tracing of its step in ``use_matmul_backend(backend, num_rows)``:
inside it, each product the backend ``handles`` is traced as the backend's computation, told
how many rows of the padded step are real. Outside (a model called directly, as the tests and
reference comparisons do) and for products the backend declines, XLA computes the product.
The activation is a context variable read at trace time, so it costs nothing per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from esurge_core.matmul.backend import MatmulBackend, xla_matmul


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


def matmul(x: jax.Array, w: jax.Array, *, transpose_w: bool = False, out_dtype=None) -> jax.Array:
    """``x @ w`` (``x @ w.T`` with ``transpose_w``) with inputs in ``w``'s dtype, accumulated
    in fp32 where ``out_dtype`` (default: ``x``'s dtype) is fp32, returned in ``out_dtype``.

    With equal dtypes this is plain ``x @ w``. With bf16 weights and fp32 activations the
    activations are rounded to bf16 for the product (never the weights widened, which would
    copy them every step) and the result comes back in fp32.
    """
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    active = _active.get()
    if x.ndim == 2 and active is not None:
        spec_x = jax.ShapeDtypeStruct(x.shape, x.dtype)
        spec_w = jax.ShapeDtypeStruct(w.shape, w.dtype)
        if active.backend.handles(spec_x, spec_w, transpose_w=transpose_w, out_dtype=out_dtype):
            return active.backend.matmul(
                x, w, active.num_rows, transpose_w=transpose_w, out_dtype=out_dtype
            )
    return xla_matmul(x, w, transpose_w=transpose_w, out_dtype=out_dtype)
