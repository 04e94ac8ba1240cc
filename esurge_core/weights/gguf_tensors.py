"""GGUF tensor names and layouts -> Hugging Face tensor names and layouts.

llama.cpp's converter renames every tensor (`model.layers.3.self_attn.q_proj.weight` becomes
`blk.3.attn_q.weight`) and, for some architectures, changes the values:

- Llama family: the rows of the Q and K projections are permuted so that llama.cpp can apply
  RoPE to interleaved pairs; `unpermute_qk_rows` undoes it, exactly as the converter's
  `permute` is inverted by transformers' GGUF integration.
- Gemma family: RMSNorm computes `x * (1 + w)` in Hugging Face, and the converter stores
  `1 + w` so llama.cpp can use a plain RMSNorm; we subtract 1 again.

The shapes need no transposition: GGUF lists dimensions fastest-first, so a GGUF
`[in, out]` matrix read row-major is Hugging Face's `[out, in]` `nn.Linear` weight.
"""

from __future__ import annotations

import re

import numpy as np

from esurge_core.weights.errors import UnsupportedConfigError
from esurge_core.weights.gguf_config import GGUFArchitecture

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

_BLOCK_NAMES_COMMON = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# Llama/Qwen blocks have two norms: before attention and before the MLP.
_BLOCK_NAMES_PRE_NORM = {**_BLOCK_NAMES_COMMON, "ffn_norm": "post_attention_layernorm"}

# Gemma 2/3 blocks have four: before and after attention, before and after the MLP.
_BLOCK_NAMES_SANDWICH = {
    **_BLOCK_NAMES_COMMON,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}

_BLOCK_RE = re.compile(r"blk\.(?P<layer>\d+)\.(?P<part>[a-z_]+)\.(?P<kind>weight|bias)")
_GLOBAL_RE = re.compile(r"(?P<part>[a-z_]+)\.(?P<kind>weight|bias)")


def hf_tensor_name(gguf_name: str, arch: GGUFArchitecture) -> str:
    """Return the Hugging Face name of GGUF tensor `gguf_name`.

    Raises:
        UnsupportedConfigError: The tensor has no Hugging Face counterpart eSurge knows of
            (for example `rope_freqs.weight`, Llama 3.1's frequency table, whose RoPE scaling
            cannot be recovered exactly from a GGUF file).
    """
    block_names = _BLOCK_NAMES_SANDWICH if arch.norm_plus_one else _BLOCK_NAMES_PRE_NORM
    if match := _BLOCK_RE.fullmatch(gguf_name):
        part = block_names.get(match["part"])
        if part is not None:
            return f"model.layers.{match['layer']}.{part}.{match['kind']}"
    elif (match := _GLOBAL_RE.fullmatch(gguf_name)) and match["part"] in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[match['part']]}.{match['kind']}"
    if gguf_name == "rope_freqs.weight":
        raise UnsupportedConfigError(
            "GGUF tensor 'rope_freqs.weight' (Llama 3.1-style RoPE frequency scaling) is not "
            "supported: the scaling parameters cannot be recovered from it. Load the model "
            "from its Hugging Face folder instead."
        )
    raise UnsupportedConfigError(
        f"GGUF tensor {gguf_name!r} has no known Hugging Face counterpart for architecture "
        f"{arch.gguf_name!r}; eSurge refuses to drop weights silently."
    )


def unpermute_qk_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's row permutation of a Llama Q or K projection (weight or bias).

    The converter reorders each head's rows from halves `[x0..x(d/2-1), y0..y(d/2-1)]`
    (Hugging Face's rotate-half RoPE) to pairs `[x0, y0, x1, y1, ...]`. Pass the number of
    query heads for Q and of key/value heads for K.
    """
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise UnsupportedConfigError(
            f"cannot un-permute a Q/K tensor of {rows} rows into {num_heads} heads: "
            "the row count must be a multiple of 2 * heads."
        )
    half = rows // num_heads // 2
    pairs = weight.reshape(num_heads, half, 2, *weight.shape[1:])
    return pairs.swapaxes(1, 2).reshape(weight.shape)


def to_hf_layout(
    hf_name: str, weight: np.ndarray, arch: GGUFArchitecture, config: dict
) -> np.ndarray:
    """Return `weight` (dequantised, GGUF values) converted to Hugging Face values.

    Args:
        hf_name: The tensor's Hugging Face name (from `hf_tensor_name`).
        weight: The dequantised float32 array, already in Hugging Face shape.
        arch: The model's architecture entry.
        config: The model's Hugging Face config (head counts for the Q/K un-permutation).
    """
    if arch.permuted_qk and ".self_attn.q_proj." in hf_name:
        return unpermute_qk_rows(weight, config["num_attention_heads"])
    if arch.permuted_qk and ".self_attn.k_proj." in hf_name:
        return unpermute_qk_rows(weight, config["num_key_value_heads"])
    if arch.norm_plus_one and hf_name.endswith("norm.weight"):
        return weight - np.float32(1.0)
    return weight
