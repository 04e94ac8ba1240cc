"""Tiny Hugging Face configs (as JSON-ready dicts) of the architectures the parallel tests split.

The same shapes as the model tests' cases (tests/models/hf_reference.py): hidden 64, 4 query
heads, 2 KV heads, vocab 256. So tensor size 2 splits the KV heads and tensor size 4
replicates them (fewer KV heads than devices).
"""

from __future__ import annotations

import json

import transformers

from tests.models.hf_reference import _COMMON


def _as_dict(config: transformers.PretrainedConfig) -> dict:
    data = json.loads(config.to_json_string(use_diff=False))
    data["architectures"] = [config.__class__.__name__.replace("Config", "ForCausalLM")]
    return data


def llama() -> dict:
    """A Llama 3 (untied embeddings, so both the embedding and the LM head are split)."""
    return _as_dict(transformers.LlamaConfig(**_COMMON, num_hidden_layers=2))


def gemma3() -> dict:
    """A Gemma 3 with sliding and global layers, qk-norm and a final logit soft cap."""
    config = transformers.Gemma3TextConfig(
        **_COMMON,
        num_hidden_layers=2,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=16,
        final_logit_softcapping=8.0,
    )
    data = _as_dict(config)
    data["architectures"] = ["Gemma3ForCausalLM"]
    return data


def llama4() -> dict:
    """A Llama 4 with a dense and a mixture-of-experts layer and chunked attention."""
    config = transformers.Llama4TextConfig(
        **{**_COMMON, "intermediate_size": 64},
        intermediate_size_mlp=128,
        num_hidden_layers=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        interleave_moe_layer_step=2,
        no_rope_layer_interval=2,
        attention_chunk_size=8,
        use_qk_norm=True,
        attn_temperature_tuning=True,
        floor_scale=4,
        attn_scale=0.5,
    )
    data = _as_dict(config)
    data["architectures"] = ["Llama4ForCausalLM"]
    return data


def all_configs() -> dict[str, dict]:
    """Every tiny config by name."""
    return {"llama": llama(), "gemma3": gemma3(), "llama4": llama4()}
