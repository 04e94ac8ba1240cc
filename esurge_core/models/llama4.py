"""Llama 4 text (`Llama4ForCausalLM`, `Llama4TextConfig`).

What sets it apart from the Llama family:

- RoPE and NoPE layers: `no_rope_layers[i] == 1` means layer i uses RoPE (the name is
  historical). RoPE layers use chunked local attention (`attention_chunk_size`: a query sees
  the keys of its own chunk up to itself); NoPE layers attend to the whole context. The two
  kinds form two KV-cache groups. `layer_types` ("chunked_attention" / "full_attention")
  wins when the config lists it.
- RoPE rotates adjacent pairs (dims 2i, 2i+1: the complex-number layout of Meta's code),
  not halves.
- `use_qk_norm`: a weightless RMS ("L2") norm of queries and keys after RoPE, on RoPE
  layers only.
- `attn_temperature_tuning`: on NoPE layers queries are scaled by
  `1 + attn_scale * log1p(floor((position + 1) / floor_scale))`.
- Mixture of experts on `moe_layers` (or every `interleave_moe_layer_step`-th layer): a
  router picks the top `num_experts_per_tok` experts, their sigmoid scores scale the
  expert's *input*, and a shared expert is always added. Other layers have a dense MLP of
  `intermediate_size_mlp`.

The experts are computed densely (every expert on every token, unselected experts get a
zero input and so contribute zero): exact and simple, but E times the FLOPs of a sparse
dispatch. Good for correctness and small models; a grouped-matmul dispatch is the upgrade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from esurge_core.attention.metadata import AttentionMetadata
from esurge_core.models.activations import activation
from esurge_core.models.attention_pattern import LayerAttention
from esurge_core.models.causal_lm import CausalLM
from esurge_core.models.hf_config import config_value
from esurge_core.models.norms import l2_norm, rms_norm
from esurge_core.models.paged_attention import AttentionKernels, paged_attention
from esurge_core.models.params import ParamPath, ParamSpec, linear_spec
from esurge_core.models.rope import (
    apply_rope_interleaved,
    inverse_frequencies,
    rope_angles,
    rope_parameters_of,
)
from esurge_core.models.transformer_blocks import (
    attention_specs,
    embed_tokens,
    gated_mlp,
    gated_mlp_specs,
    project_output,
    project_qkv,
)
from esurge_core.weights.errors import UnsupportedConfigError


def _first_half(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[..., : array.shape[-1] // 2])


def _second_half(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[..., array.shape[-1] // 2 :])


class Llama4ForCausalLM(CausalLM):
    """Llama 4 text decoder: chunked RoPE layers, global NoPE layers, MoE feed-forward."""

    def __init__(self, config: Mapping[str, Any], dtype: Any) -> None:
        super().__init__(config, dtype)
        n = self.num_layers
        self.intermediate_size = int(config_value(config, "intermediate_size"))
        self.intermediate_size_mlp = int(config_value(config, "intermediate_size_mlp"))
        self.act = activation(str(config_value(config, "hidden_act", "silu")))
        self.attention_bias = bool(config_value(config, "attention_bias", False))
        self.num_experts = int(config_value(config, "num_local_experts"))
        self.top_k = int(config_value(config, "num_experts_per_tok", 1))
        interval = int(config_value(config, "no_rope_layer_interval", 4))
        self.use_rope = tuple(
            bool(flag)
            for flag in config.get("no_rope_layers")
            or [int((i + 1) % interval != 0) for i in range(n)]
        )[:n]
        step = int(config_value(config, "interleave_moe_layer_step", 1))
        moe_layers = config.get("moe_layers")
        if moe_layers is None:
            moe_layers = range(step - 1, n, step)
        self.moe_layers = frozenset(int(i) for i in moe_layers)
        self.use_qk_norm = bool(config_value(config, "use_qk_norm", True))
        self.temperature_tuning = bool(config_value(config, "attn_temperature_tuning", True))
        self.floor_scale = float(config_value(config, "floor_scale", 8192))
        self.attn_scale = float(config_value(config, "attn_scale", 0.1))
        self.sm_scale = self.head_dim**-0.5
        rope = rope_parameters_of(config, default_theta=500_000.0)
        self.inv_freq = inverse_frequencies(rope, self.head_dim, self.max_position_embeddings)
        self._layers = tuple(self._read_layer_attention(config))

    def _read_layer_attention(self, config: Mapping[str, Any]) -> list[LayerAttention]:
        chunk = config.get("attention_chunk_size")
        layer_types = config.get("layer_types") or [
            "chunked_attention" if rope and chunk is not None else "full_attention"
            for rope in self.use_rope
        ]
        if "chunked_attention" in layer_types and chunk is None:
            raise UnsupportedConfigError(
                "Llama4ForCausalLM config has chunked_attention layers but no attention_chunk_size"
            )
        unknown = sorted(set(layer_types) - {"chunked_attention", "full_attention"})
        if unknown:
            raise UnsupportedConfigError(
                f"Llama4ForCausalLM layer_types {unknown} are not supported; "
                "supported: ['chunked_attention', 'full_attention']"
            )
        return [
            LayerAttention.chunked(chunk) if kind == "chunked_attention" else LayerAttention.full()
            for kind in layer_types
        ]

    def layer_attention(self) -> Sequence[LayerAttention]:
        """Return each layer's pattern: chunked for RoPE layers, full for NoPE layers."""
        return self._layers

    def _moe_specs(self, path: ParamPath, prefix: str) -> list[ParamSpec]:
        d, f, e = self.hidden_size, self.intermediate_size, self.num_experts
        experts = f"{prefix}.experts"
        return [
            linear_spec(
                (*path, "router"),
                f"{prefix}.router.weight",
                d,
                e,
                ("embed", "experts"),
                matmul_weight=False,  # x @ router, outside the matmul backends
            ),
            # HF packs [gate | up] on the last axis; split so "mlp" can be sharded.
            ParamSpec(
                (*path, "expert_gate"),
                f"{experts}.gate_up_proj",
                (e, d, 2 * f),
                ("experts", "embed", "mlp"),
                _first_half,
            ),
            ParamSpec(
                (*path, "expert_up"),
                f"{experts}.gate_up_proj",
                (e, d, 2 * f),
                ("experts", "embed", "mlp"),
                _second_half,
            ),
            ParamSpec(
                (*path, "expert_down"),
                f"{experts}.down_proj",
                (e, f, d),
                ("experts", "mlp", "embed"),
            ),
            *gated_mlp_specs((*path, "shared"), f"{prefix}.shared_expert", d, f),
        ]

    def param_specs(self) -> list[ParamSpec]:
        """Return the specs of embeddings, attention, dense-or-MoE feed-forward and norms."""
        d = self.hidden_size
        specs = self.embedding_specs()
        for i in range(self.num_layers):
            prefix = f"model.layers.{i}"
            specs += attention_specs(
                ("layers", i, "attn"),
                f"{prefix}.self_attn",
                self.attention_shape,
                qkv_bias=self.attention_bias,
                o_bias=self.attention_bias,
            )
            if i in self.moe_layers:
                specs += self._moe_specs(("layers", i, "moe"), f"{prefix}.feed_forward")
            else:
                specs += gated_mlp_specs(
                    ("layers", i, "mlp"), f"{prefix}.feed_forward", d, self.intermediate_size_mlp
                )
            specs += [
                ParamSpec(
                    ("layers", i, "input_norm"), f"{prefix}.input_layernorm.weight", (d,), ("norm",)
                ),
                ParamSpec(
                    ("layers", i, "post_attn_norm"),
                    f"{prefix}.post_attention_layernorm.weight",
                    (d,),
                    ("norm",),
                ),
            ]
        return specs

    def _moe(self, p: dict, x: jax.Array) -> jax.Array:
        router_logits = x @ p["router"]  # [T, E]
        _, top = jax.lax.top_k(router_logits, self.top_k)
        chosen = jnp.any(jax.nn.one_hot(top, self.num_experts, dtype=jnp.bool_), axis=1)
        scores = jnp.where(chosen, jax.nn.sigmoid(router_logits.astype(jnp.float32)), 0.0)
        routed_in = x[None, :, :] * scores.T.astype(x.dtype)[:, :, None]  # [E, T, D]
        gate = jnp.einsum("etd,edf->etf", routed_in, p["expert_gate"])
        up = jnp.einsum("etd,edf->etf", routed_in, p["expert_up"])
        routed = jnp.einsum("etf,efd->td", self.act(gate) * up, p["expert_down"])
        return gated_mlp(p["shared"], x, self.act) + routed

    def _temperature(self, positions: jax.Array) -> jax.Array:
        pos = positions.astype(jnp.float32)
        return jnp.log1p(jnp.floor((pos + 1.0) / self.floor_scale)) * self.attn_scale + 1.0

    def forward(
        self,
        params: dict,
        kv_caches: tuple[jax.Array, ...],
        input_ids: jax.Array,
        positions: jax.Array,
        metadata: AttentionMetadata,
        attention: AttentionKernels,
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Run the decoder over a packed ragged batch (see `CausalLM.forward`)."""
        eps = self.rms_norm_eps
        groups = self.layer_groups()
        cos, sin = rope_angles(positions, self.inv_freq)
        x = embed_tokens(params["embed_tokens"], input_ids, self.dtype)
        new_caches = []
        for i, layer in enumerate(params["layers"]):
            p = layer["attn"]
            q, k, v = project_qkv(p, rms_norm(x, layer["input_norm"], eps), self.attention_shape)
            if self.use_rope[i]:
                q, k = apply_rope_interleaved(q, cos, sin), apply_rope_interleaved(k, cos, sin)
                if self.use_qk_norm:
                    q, k = l2_norm(q, eps), l2_norm(k, eps)
            elif self.temperature_tuning:
                scale = self._temperature(positions)[:, None, None]
                q = (q.astype(jnp.float32) * scale).astype(q.dtype)
            out, cache = paged_attention(
                attention,
                q,
                k,
                v,
                kv_caches[i],
                metadata,
                groups[i],
                self._layers[i],
                sm_scale=self.sm_scale,
            )
            new_caches.append(cache)
            x = x + project_output(p, out)
            h = rms_norm(x, layer["post_attn_norm"], eps)
            if i in self.moe_layers:
                x = x + self._moe(layer["moe"], h)
            else:
                x = x + gated_mlp(layer["mlp"], h, self.act)
        return rms_norm(x, params["final_norm"], eps), tuple(new_caches)
