"""Rotary position embeddings: frequencies from a Hugging Face config, and their application.

Configs come in two spellings: transformers >= 5 writes `rope_parameters` (a dict with
`rope_theta` and `rope_type`, or one such dict per layer type for hybrid models); older
configs write `rope_theta` plus an optional `rope_scaling` dict. `rope_parameters_of` accepts
both. Supported RoPE types: "default", "linear" and "llama3" (Llama 3.1+ frequency smoothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from esurge_core.models.materialize import materialize
from esurge_core.weights.errors import UnsupportedConfigError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_parameters_of(
    config: Mapping[str, Any],
    *,
    default_theta: float,
    layer_type: str | None = None,
    legacy_theta_key: str = "rope_theta",
    legacy_scaling: bool = True,
) -> dict[str, Any]:
    """Return the RoPE parameters (`rope_type`, `rope_theta`, scaling keys) of one layer type.

    Args:
        config: The Hugging Face config dict.
        default_theta: The model family's base when the config names none.
        layer_type: For configs whose `rope_parameters` are nested by layer type (Gemma 3:
            "full_attention", "sliding_attention"), the type to read.
        legacy_theta_key: The key holding the base in old-style configs (Gemma 3's local
            layers use "rope_local_base_freq").
        legacy_scaling: Whether an old-style `rope_scaling` dict applies to this layer type.
    """
    params = config.get("rope_parameters")
    if isinstance(params, Mapping) and layer_type is not None and layer_type in params:
        params = params[layer_type]
    if isinstance(params, Mapping) and ("rope_theta" in params or "rope_type" in params):
        result = dict(params)
    else:
        scaling = config.get("rope_scaling") if legacy_scaling else None
        result = dict(scaling or {})
        theta = config.get(legacy_theta_key)
        if theta is not None:
            result["rope_theta"] = theta
    result.setdefault("rope_type", result.get("type", "default"))
    result.setdefault("rope_theta", default_theta)
    return result


def inverse_frequencies(
    rope: Mapping[str, Any], head_dim: int, max_position_embeddings: int
) -> np.ndarray:
    """Return float32[head_dim // 2] inverse frequencies for the RoPE parameters `rope`.

    Raises:
        UnsupportedConfigError: the RoPE type is not supported, or a partial rotary factor
            other than 1 is configured.
    """
    rope_type = rope["rope_type"]
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedConfigError(
            f"RoPE type {rope_type!r} is not supported; supported: {list(SUPPORTED_ROPE_TYPES)}"
        )
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        raise UnsupportedConfigError(
            f"partial_rotary_factor={rope['partial_rotary_factor']} is not supported; only 1.0"
        )
    base = np.float32(rope["rope_theta"])
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / base**exponents).astype(np.float32)
    if rope_type == "linear":
        return (inv_freq / np.float32(rope["factor"])).astype(np.float32)
    if rope_type == "llama3":
        return _llama3_frequencies(inv_freq, rope, max_position_embeddings)
    return inv_freq


def _llama3_frequencies(
    inv_freq: np.ndarray, rope: Mapping[str, Any], max_position_embeddings: int
) -> np.ndarray:
    # Llama 3.1: long wavelengths are divided by `factor`, short ones kept, and the band in
    # between is interpolated smoothly (same formula as transformers' _compute_llama3_parameters).
    factor = float(rope["factor"])
    low_freq_factor = float(rope["low_freq_factor"])
    high_freq_factor = float(rope["high_freq_factor"])
    old_context = float(rope.get("original_max_position_embeddings") or max_position_embeddings)
    low_freq_wavelen = old_context / low_freq_factor
    high_freq_wavelen = old_context / high_freq_factor
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_angles(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """Return (cos, sin), each float32[T, head_dim // 2], for int32[T] token positions.

    Evaluated once per step (:func:`~esurge_core.models.materialize.materialize`), not inside
    every layer's rotation of q and k.
    """

    def cos_sin(positions: jax.Array) -> tuple[jax.Array, jax.Array]:
        angles = positions.astype(jnp.float32)[:, None] * jnp.asarray(inv_freq)[None, :]
        return jnp.cos(angles), jnp.sin(angles)

    return materialize(cos_sin, positions, positions)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate `x` [T, heads, head_dim] by halves (the Llama/Gemma/Qwen "rotate_half" layout).

    Dimension i pairs with i + head_dim / 2. Computed in float32, returned in x's dtype.
    """
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    x1, x2 = x32[..., :half], x32[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


def apply_rope_interleaved(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate `x` [T, heads, head_dim] by adjacent pairs (Llama 4's complex-number layout).

    Dimension 2i pairs with 2i + 1. Computed in float32, returned in x's dtype.
    """
    x32 = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    even, odd = x32[..., 0], x32[..., 1]
    c, s = cos[:, None, :], sin[:, None, :]
    rotated = jnp.stack([even * c - odd * s, even * s + odd * c], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)
