"""Gemma 3 text (`Gemma3ForCausalLM`, model_type "gemma3_text").

What sets it apart from the Llama family:

- Interleaved local and global layers: `layer_types` (or the older `sliding_window_pattern`,
  every n-th layer global) makes most layers sliding-window ("sliding_attention") and some
  full ("full_attention"); the two kinds form two KV-cache groups.
- A RoPE base per layer kind: global layers use `rope_parameters["full_attention"]` (old
  configs: `rope_theta` and `rope_scaling`), local layers `rope_parameters["sliding_attention"]`
  (old configs: `rope_local_base_freq`).
- RMSNorm scales by (1 + weight), computed in float32; norms before and after both the
  attention and the MLP ("sandwich" norms); per-head q/k RMSNorm before RoPE.
- Embeddings multiplied by sqrt(hidden_size), rounded to the model dtype as HF does.
- Attention scale `query_pre_attn_scalar ** -0.5`; optional final-logit tanh soft cap;
  GeGLU MLP (`gelu_pytorch_tanh`); tied embeddings by default.
- `attn_logit_softcapping` is ignored, as Hugging Face's Gemma 3 ignores it (Gemma 2 used
  it; no released Gemma 3 sets it). Matching the reference's logits wins over the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from esurge_core.attention.metadata import AttentionMetadata
from esurge_core.models.activations import activation
from esurge_core.models.attention_pattern import LayerAttention
from esurge_core.models.causal_lm import CausalLM
from esurge_core.models.hf_config import config_value
from esurge_core.models.norms import gemma_rms_norm
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

_SLIDING = "sliding_attention"
_FULL = "full_attention"
_LAYER_NORMS = (
    ("input_norm", "input_layernorm"),
    ("post_attn_norm", "post_attention_layernorm"),
    ("pre_ffw_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
)


class Gemma3ForCausalLM(CausalLM):
    """Gemma 3 text decoder with local (sliding-window) and global layers."""

    def __init__(self, config: Mapping[str, Any], dtype: Any) -> None:
        super().__init__(config, dtype)
        if config.get("use_bidirectional_attention"):
            raise UnsupportedConfigError(
                "Gemma3ForCausalLM with use_bidirectional_attention=true (an encoder) is not "
                "supported; eSurge serves causal decoders only"
            )
        self.tie_word_embeddings = bool(config_value(config, "tie_word_embeddings", True))
        self.intermediate_size = int(config_value(config, "intermediate_size"))
        act_name = (
            config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
        )
        self.act = activation(str(act_name))
        self.sm_scale = float(config_value(config, "query_pre_attn_scalar", 256)) ** -0.5
        self.final_logit_softcap = config.get("final_logit_softcapping")
        self.attention_bias = bool(config_value(config, "attention_bias", False))
        self.layer_types = self._read_layer_types(config)
        window = int(config_value(config, "sliding_window", 4096))  # HF's default
        self._layers = tuple(
            LayerAttention.sliding(window) if kind == _SLIDING else LayerAttention.full()
            for kind in self.layer_types
        )
        self.inv_freq = {
            _FULL: inverse_frequencies(
                rope_parameters_of(config, default_theta=1_000_000.0, layer_type=_FULL),
                self.head_dim,
                self.max_position_embeddings,
            ),
            _SLIDING: inverse_frequencies(
                rope_parameters_of(
                    config,
                    default_theta=10_000.0,
                    layer_type=_SLIDING,
                    legacy_theta_key="rope_local_base_freq",
                    legacy_scaling=False,
                ),
                self.head_dim,
                self.max_position_embeddings,
            ),
        }

    def _read_layer_types(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        layer_types = config.get("layer_types")
        if layer_types is None:
            pattern = int(config_value(config, "sliding_window_pattern", 6))
            layer_types = [_SLIDING if (i + 1) % pattern else _FULL for i in range(self.num_layers)]
        unknown = sorted(set(layer_types) - {_SLIDING, _FULL})
        if unknown or len(layer_types) != self.num_layers:
            raise UnsupportedConfigError(
                f"Gemma3ForCausalLM layer_types must list {self.num_layers} entries of "
                f"{[_SLIDING, _FULL]}; got {list(layer_types)}"
            )
        return tuple(layer_types)

    def layer_attention(self) -> Sequence[LayerAttention]:
        """Return each layer's pattern: sliding window for local layers, full for global."""
        return self._layers

    def param_specs(self) -> list[ParamSpec]:
        """Return the specs of embeddings, every layer's attention/MLP/four norms."""
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
                qk_norm=True,
            )
            specs += gated_mlp_specs(
                ("layers", i, "mlp"), f"{prefix}.mlp", d, self.intermediate_size
            )
            specs += [
                ParamSpec(("layers", i, key), f"{prefix}.{hf}.weight", (d,), ("norm",))
                for key, hf in _LAYER_NORMS
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
        angles = {kind: rope_angles(positions, freq) for kind, freq in self.inv_freq.items()}
        embed_scale = jnp.asarray(self.hidden_size**0.5, dtype=self.dtype)
        x = embed_tokens(params["embed_tokens"], input_ids, self.dtype) * embed_scale
        new_caches = []
        for i, layer in enumerate(params["layers"]):
            p = layer["attn"]
            cos, sin = angles[self.layer_types[i]]
            h = gemma_rms_norm(x, layer["input_norm"], eps)
            q, k, v = project_qkv(p, h, self.attention_shape)
            q = apply_rope(gemma_rms_norm(q, p["q_norm"], eps), cos, sin)
            k = apply_rope(gemma_rms_norm(k, p["k_norm"], eps), cos, sin)
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
            x = x + gemma_rms_norm(project_output(p, out), layer["post_attn_norm"], eps)
            h = gated_mlp(layer["mlp"], gemma_rms_norm(x, layer["pre_ffw_norm"], eps), self.act)
            x = x + gemma_rms_norm(h, layer["post_ffw_norm"], eps)
        return gemma_rms_norm(x, params["final_norm"], eps), tuple(new_caches)
