"""The Llama family: Llama 2/3 (and SmolLM2), Mistral, Qwen2/2.5 and Qwen3.

One pre-norm decoder: RMSNorm -> GQA attention with rotate-half RoPE -> residual ->
RMSNorm -> SwiGLU MLP -> residual. The members differ only in switches read from config:

- Llama 3.1+: `rope_type: "llama3"` frequency smoothing (see rope.py).
- Mistral: `sliding_window` on every layer.
- Qwen2/2.5: biases on the q/k/v projections; optional sliding window on layers
  >= `max_window_layers` (or as `layer_types` says).
- Qwen3: per-head RMSNorm of queries and keys before RoPE (`q_norm`, `k_norm`).
- Any member: `tie_word_embeddings`, `attention_bias`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax

from esurge_core.attention.metadata import AttentionMetadata
from esurge_core.models.activations import activation
from esurge_core.models.attention_pattern import LayerAttention
from esurge_core.models.causal_lm import CausalLM
from esurge_core.models.hf_config import config_value
from esurge_core.models.norms import add_rms_norm, rms_norm
from esurge_core.models.paged_attention import AttentionKernels, paged_attention
from esurge_core.models.params import ParamSpec
from esurge_core.models.rope import (
    apply_rope,
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

#: Architectures this module implements (config["architectures"][0]).
LLAMA_FAMILY_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)


class LlamaFamilyForCausalLM(CausalLM):
    """Llama, Mistral, Qwen2 and Qwen3 decoders (see the module docstring for the switches)."""

    def __init__(self, config: Mapping[str, Any], dtype: Any) -> None:
        super().__init__(config, dtype)
        arch = self.architecture
        attention_bias = bool(config_value(config, "attention_bias", False))
        self.qkv_bias = attention_bias or arch == "Qwen2ForCausalLM"
        self.o_bias = attention_bias
        self.qk_norm = arch == "Qwen3ForCausalLM"
        if config_value(config, "mlp_bias", False):
            raise UnsupportedConfigError(f"{arch} with mlp_bias=true is not supported")
        self.intermediate_size = int(config_value(config, "intermediate_size"))
        self.act = activation(str(config_value(config, "hidden_act", "silu")))
        rope = rope_parameters_of(config, default_theta=10_000.0)
        self.inv_freq = inverse_frequencies(rope, self.head_dim, self.max_position_embeddings)
        self.sm_scale = self.head_dim**-0.5
        self._layers = tuple(self._read_layer_attention(config))

    def _read_layer_attention(self, config: Mapping[str, Any]) -> list[LayerAttention]:
        window = config.get("sliding_window")
        layer_types = config.get("layer_types")
        if layer_types:
            return [
                LayerAttention.sliding(window)
                if kind == "sliding_attention" and window is not None
                else LayerAttention.full()
                for kind in layer_types
            ]
        if self.architecture in ("Qwen2ForCausalLM", "Qwen3ForCausalLM"):
            first_sliding = int(config_value(config, "max_window_layers", self.num_layers))
            use_window = bool(config.get("use_sliding_window", False)) and window is not None
            return [
                LayerAttention.sliding(window)
                if use_window and i >= first_sliding
                else LayerAttention.full()
                for i in range(self.num_layers)
            ]
        if window is not None:
            return [LayerAttention.sliding(window)] * self.num_layers
        return [LayerAttention.full()] * self.num_layers

    def layer_attention(self) -> Sequence[LayerAttention]:
        """Return each layer's pattern: full, or a sliding window where configured."""
        return self._layers

    def param_specs(self) -> list[ParamSpec]:
        """Return the specs of embeddings, every layer's attention/MLP/norms, and the head."""
        d = self.hidden_size
        specs = self.embedding_specs()
        for i in range(self.num_layers):
            prefix = f"model.layers.{i}"
            specs += attention_specs(
                ("layers", i, "attn"),
                f"{prefix}.self_attn",
                self.attention_shape,
                qkv_bias=self.qkv_bias,
                o_bias=self.o_bias,
                qk_norm=self.qk_norm,
            )
            specs += gated_mlp_specs(
                ("layers", i, "mlp"), f"{prefix}.mlp", d, self.intermediate_size
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
        # The residual adds are applied with the norm after them (add_rms_norm, which a
        # matmul backend may fuse): `delta` is the last block's output, not yet added to x.
        delta = None
        for i, layer in enumerate(params["layers"]):
            p = layer["attn"]
            if delta is None:
                normed = rms_norm(x, layer["input_norm"], eps)
            else:
                x, normed = add_rms_norm(x, delta, layer["input_norm"], eps)
            q, k, v = project_qkv(p, normed, self.attention_shape)
            if self.qk_norm:
                q = rms_norm(q, p["q_norm"], eps)
                k = rms_norm(k, p["k_norm"], eps)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
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
            x, normed = add_rms_norm(x, project_output(p, out), layer["post_attn_norm"], eps)
            delta = gated_mlp(layer["mlp"], normed, self.act)
        if delta is None:
            return rms_norm(x, params["final_norm"], eps), tuple(new_caches)
        _, normed = add_rms_norm(x, delta, params["final_norm"], eps)
        return normed, tuple(new_caches)
