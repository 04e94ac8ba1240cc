"""Decoder blocks shared by the model families: attention projections and the gated MLP.

Each block comes as a pair: a function returning its `ParamSpec`s for one layer (Hugging
Face names under a prefix such as "model.layers.3.self_attn"), and a function computing it
from the params that those specs load. Linear weights are stored [in, out], so a projection
is `matmul(x, w)` (``esurge_core.matmul.dispatch``): the product's inputs are in the weight's
dtype and its result in the activation's (so bf16 weights with fp32 activations multiply in
bf16, accumulating in fp32), computed by the active matmul backend or XLA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from esurge_core.matmul.dispatch import gated_matmul, matmul
from esurge_core.models.fused_projections import GATE_UP, QKV
from esurge_core.models.params import ParamPath, ParamSpec, linear_spec


@dataclass(frozen=True, slots=True)
class AttentionShape:
    """Sizes of one attention block.

    Attributes:
        hidden_size: Model width.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (GQA: num_heads is a multiple of it).
        head_dim: Size of one head.
    """

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


def attention_specs(
    path: ParamPath,
    prefix: str,
    shape: AttentionShape,
    *,
    qkv_bias: bool = False,
    o_bias: bool = False,
    qk_norm: bool = False,
) -> list[ParamSpec]:
    """Specs of q/k/v/o projections (optionally their biases and per-head q/k RMSNorms)."""
    d, hq, hkv = (
        shape.hidden_size,
        shape.num_heads * shape.head_dim,
        shape.num_kv_heads * shape.head_dim,
    )
    specs = [
        linear_spec((*path, "q"), f"{prefix}.q_proj.weight", d, hq, ("embed", "heads")),
        linear_spec((*path, "k"), f"{prefix}.k_proj.weight", d, hkv, ("embed", "kv_heads")),
        linear_spec((*path, "v"), f"{prefix}.v_proj.weight", d, hkv, ("embed", "kv_heads")),
        linear_spec((*path, "o"), f"{prefix}.o_proj.weight", hq, d, ("heads", "embed")),
    ]
    if qkv_bias:
        specs += [
            ParamSpec((*path, "q_bias"), f"{prefix}.q_proj.bias", (hq,), ("heads",)),
            ParamSpec((*path, "k_bias"), f"{prefix}.k_proj.bias", (hkv,), ("kv_heads",)),
            ParamSpec((*path, "v_bias"), f"{prefix}.v_proj.bias", (hkv,), ("kv_heads",)),
        ]
    if o_bias:
        specs.append(ParamSpec((*path, "o_bias"), f"{prefix}.o_proj.bias", (d,), ("embed",)))
    if qk_norm:
        specs += [
            ParamSpec(
                (*path, "q_norm"), f"{prefix}.q_norm.weight", (shape.head_dim,), ("head_dim",)
            ),
            ParamSpec(
                (*path, "k_norm"), f"{prefix}.k_norm.weight", (shape.head_dim,), ("head_dim",)
            ),
        ]
    return specs


def _linear(x: jax.Array, p: dict, name: str) -> jax.Array:
    y = matmul(x, p[name])
    bias = p.get(f"{name}_bias")
    return y if bias is None else y + bias


def project_qkv(
    p: dict, x: jax.Array, shape: AttentionShape
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Project x [T, hidden] to queries [T, num_heads, head_dim] and keys/values [T, kv, hd].

    One product where the params hold the fused ``qkv`` weight (``fuse_projections``), else
    three.
    """
    t = x.shape[0]
    if QKV.name in p:
        q_size = shape.num_heads * shape.head_dim
        kv_size = shape.num_kv_heads * shape.head_dim
        qkv = _linear(x, p, QKV.name)
        q, k, v = qkv[:, :q_size], qkv[:, q_size : q_size + kv_size], qkv[:, q_size + kv_size :]
    else:
        q, k, v = (_linear(x, p, name) for name in QKV.parts)
    return (
        q.reshape(t, shape.num_heads, shape.head_dim),
        k.reshape(t, shape.num_kv_heads, shape.head_dim),
        v.reshape(t, shape.num_kv_heads, shape.head_dim),
    )


def project_output(p: dict, attn: jax.Array) -> jax.Array:
    """Project the attention output [T, num_heads, head_dim] back to [T, hidden]."""
    return _linear(attn.reshape(attn.shape[0], -1), p, "o")


def gated_mlp_specs(
    path: ParamPath, prefix: str, hidden_size: int, intermediate_size: int
) -> list[ParamSpec]:
    """Specs of a gate/up/down feed-forward (SwiGLU / GeGLU)."""
    d, f = hidden_size, intermediate_size
    return [
        linear_spec((*path, "gate"), f"{prefix}.gate_proj.weight", d, f, ("embed", "mlp")),
        linear_spec((*path, "up"), f"{prefix}.up_proj.weight", d, f, ("embed", "mlp")),
        linear_spec((*path, "down"), f"{prefix}.down_proj.weight", f, d, ("mlp", "embed")),
    ]


def gated_mlp(p: dict, x: jax.Array, act: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """`down(act(gate(x)) * up(x))`: gate and up as one product where the params hold the
    fused ``gate_up`` weight (``fuse_projections``), which the active matmul backend may
    compute together with ``act`` (``gated_matmul``)."""
    if GATE_UP.name in p:
        hidden = gated_matmul(x, p[GATE_UP.name], act)
    else:
        hidden = act(matmul(x, p["gate"])) * matmul(x, p["up"])
    return matmul(hidden, p["down"])


def embed_tokens(
    embedding: jax.Array, input_ids: jax.Array, dtype: jnp.dtype | None = None
) -> jax.Array:
    """Look up token embeddings [T, hidden] for int32[T] ids (ids are clipped into range),
    in ``dtype`` (the activation dtype; default: the embedding's)."""
    rows = jnp.take(embedding, input_ids, axis=0, mode="clip")
    return rows if dtype is None else rows.astype(dtype)
