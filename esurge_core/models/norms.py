"""RMS normalisations, computed in float32 and cast back to the activation dtype.

Each variant mirrors where its Hugging Face original casts, so bfloat16 runs round the way
the reference does: Llama multiplies the weight after the cast, Gemma before it.

``add_rms_norm`` is a decoder's residual add with the Llama RMSNorm after it, which the
active matmul backend may compute as one call. XLA:CPU runs the add and the norm as four
small ops, each a few microseconds on a decode step's rows, 60 times a step for SmolLM2. A
backend offering them as one kernel defines:

* ``takes_add_rms_norm(x: jax.ShapeDtypeStruct, weight: jax.ShapeDtypeStruct) -> bool``:
  whether it takes rows of ``x``'s shape and dtype with a weight of ``weight``'s;
* ``add_rms_norm(x, delta, weight, eps) -> (s, normed)``: ``s = x + delta`` and
  ``rms_norm(s, weight, eps)`` in ``x``'s dtype, to fp32 rounding (the mean's sum may be
  added in another order than XLA's).

Outside a backend's step (``use_matmul_backend``), and where it declines, XLA computes both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from esurge_core.matmul.dispatch import active_backend


def _normalise(x: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Llama/Qwen RMSNorm: `weight * normalise(x)`, the weight applied in the input dtype."""
    return weight * _normalise(x, eps).astype(x.dtype)


def add_rms_norm(
    x: jax.Array, delta: jax.Array, weight: jax.Array, eps: float
) -> tuple[jax.Array, jax.Array]:
    """``(s, rms_norm(s, weight, eps))`` with ``s = x + delta``: the residual stream after a
    block and the next block's normalised input (the active backend's kernel where it takes
    them)."""
    backend = active_backend()
    takes = getattr(backend, "takes_add_rms_norm", None)
    if takes is not None and delta.shape == x.shape and delta.dtype == x.dtype:
        spec_x = jax.ShapeDtypeStruct(x.shape, x.dtype)
        if takes(spec_x, jax.ShapeDtypeStruct(weight.shape, weight.dtype)):
            return backend.add_rms_norm(x, delta, weight, eps)
    s = x + delta
    return s, rms_norm(s, weight, eps)


def gemma_rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Gemma RMSNorm: `normalise(x) * (1 + weight)` in float32, then cast to the input dtype."""
    return (_normalise(x, eps) * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)


def l2_norm(x: jax.Array, eps: float) -> jax.Array:
    """Weightless RMS normalisation (Llama 4's query/key "L2 norm")."""
    return _normalise(x, eps).astype(x.dtype)
