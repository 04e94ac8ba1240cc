"""Tiny random Hugging Face models: the oracle the eSurge models are checked against.

Each case builds a transformers model from a small config (hidden 64, 2-4 layers, vocab
256), re-draws its weights with a larger spread than the default init (so attention is far
from uniform and a wrong mask, position or page shows up in the logits), and saves it with
`save_pretrained(safe_serialization=True)`. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers

VOCAB = 256
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


@dataclass(frozen=True)
class HFCase:
    """One architecture variant under test: its name and how to build the HF model."""

    name: str
    build: Callable[[], transformers.PreTrainedModel]


def _llama_smollm2():
    # SmolLM2 is a Llama with tied embeddings.
    config = transformers.LlamaConfig(**_COMMON, num_hidden_layers=2, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config)


def _llama3_rope():
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    config = transformers.LlamaConfig(**_COMMON, num_hidden_layers=2, rope_parameters=rope)
    return transformers.LlamaForCausalLM(config)


def _mistral():
    config = transformers.MistralConfig(**_COMMON, num_hidden_layers=2, sliding_window=8)
    return transformers.MistralForCausalLM(config)


def _qwen2():
    config = transformers.Qwen2Config(**_COMMON, num_hidden_layers=2)
    return transformers.Qwen2ForCausalLM(config)


def _qwen3():
    config = transformers.Qwen3Config(**_COMMON, num_hidden_layers=2, head_dim=16)
    return transformers.Qwen3ForCausalLM(config)


def _gemma3():
    config = transformers.Gemma3TextConfig(
        **_COMMON,
        num_hidden_layers=4,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        query_pre_attn_scalar=16,
        attn_logit_softcapping=3.0,  # ignored by HF's Gemma 3, and so by ours
        final_logit_softcapping=8.0,
    )
    return transformers.Gemma3ForCausalLM(config)


def _llama4():
    config = transformers.Llama4TextConfig(
        **{**_COMMON, "intermediate_size": 64},
        intermediate_size_mlp=128,
        num_hidden_layers=4,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        interleave_moe_layer_step=2,  # layers 1 and 3 are MoE
        no_rope_layer_interval=2,  # layers 1 and 3 are NoPE (global)
        attention_chunk_size=8,
        use_qk_norm=True,
        attn_temperature_tuning=True,
        floor_scale=4,  # small, so the temperature changes inside the test's 21 positions
        attn_scale=0.5,
    )
    return transformers.Llama4ForCausalLM(config)


CASES = [
    HFCase("llama-smollm2", _llama_smollm2),
    HFCase("llama3-rope", _llama3_rope),
    HFCase("mistral", _mistral),
    HFCase("qwen2", _qwen2),
    HFCase("qwen3", _qwen3),
    HFCase("gemma3", _gemma3),
    HFCase("llama4", _llama4),
]


def build_hf_model(case: HFCase, seed: int = 0) -> transformers.PreTrainedModel:
    """Build the case's model in float32 with eager attention and re-drawn weights."""
    torch.manual_seed(seed)
    model = case.build().eval()
    model.config._attn_implementation = "eager"
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name:
                base = 0.0 if "gemma" in case.name else 1.0
                param.copy_(base + 0.1 * noise)
            else:
                param.copy_(0.15 * noise)
    return model


def save_hf_model(model: transformers.PreTrainedModel, folder: Path, **kwargs) -> Path:
    """Save `model` as safetensors (plus config.json) into `folder`; returns the folder."""
    model.save_pretrained(folder, safe_serialization=True, **kwargs)
    return folder


def hf_logits(model: transformers.PreTrainedModel, tokens: list[int]) -> np.ndarray:
    """Float32 logits [len(tokens), vocab] of one sequence, no cache (the plain reference)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens]), use_cache=False)
    return out.logits[0].float().numpy()
