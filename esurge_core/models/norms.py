"""RMS normalisations, computed in float32 and cast back to the activation dtype.

Each variant mirrors where its Hugging Face original casts, so bfloat16 runs round the way
the reference does: Llama multiplies the weight after the cast, Gemma before it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _normalise(x: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Llama/Qwen RMSNorm: `weight * normalise(x)`, the weight applied in the input dtype."""
    return weight * _normalise(x, eps).astype(x.dtype)


def gemma_rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Gemma RMSNorm: `normalise(x) * (1 + weight)` in float32, then cast to the input dtype."""
    return (_normalise(x, eps) * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)


def l2_norm(x: jax.Array, eps: float) -> jax.Array:
    """Weightless RMS normalisation (Llama 4's query/key "L2 norm")."""
    return _normalise(x, eps).astype(x.dtype)
