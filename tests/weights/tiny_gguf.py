"""Tiny GGUF files written with `gguf.GGUFWriter`, for the weight-loading tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np

#: Hyper-parameters of the tiny models: 2 layers, hidden 32 (one Q8_0 block), 4 query heads, 2 KV heads.
TINY = {"layers": 2, "hidden": 32, "heads": 4, "kv_heads": 2, "head_dim": 8, "ffn": 64, "vocab": 32}


def tiny_tensors(arch: str, rng: np.random.Generator, *, tied: bool = True) -> dict:
    """Return GGUF-named float32 tensors (numpy shape = Hugging Face shape) of a tiny model."""
    h, hd, ffn, vocab = TINY["hidden"], TINY["head_dim"], TINY["ffn"], TINY["vocab"]
    q_rows, kv_rows = TINY["heads"] * hd, TINY["kv_heads"] * hd
    tensors = {"token_embd.weight": (vocab, h), "output_norm.weight": (h,)}
    if not tied:
        tensors["output.weight"] = (vocab, h)
    for layer in range(TINY["layers"]):
        block = {
            "attn_norm": (h,),
            "attn_q": (q_rows, h),
            "attn_k": (kv_rows, h),
            "attn_v": (kv_rows, h),
            "attn_output": (h, q_rows),
            "ffn_gate": (ffn, h),
            "ffn_up": (ffn, h),
            "ffn_down": (h, ffn),
            "ffn_norm": (h,),
        }
        if arch == "gemma3":
            block |= {
                "attn_q_norm": (hd,),
                "attn_k_norm": (hd,),
                "post_attention_norm": (h,),
                "post_ffw_norm": (h,),
            }
        tensors |= {f"blk.{layer}.{name}.weight": shape for name, shape in block.items()}
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in tensors.items()}


def write_tiny_gguf(
    path: Path,
    arch: str,
    tensors: Mapping[str, np.ndarray],
    *,
    quantize: Mapping[str, gguf.GGMLQuantizationType] | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write a tiny GGUF file of architecture `arch` holding `tensors` (GGUF names)."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(TINY["layers"])
    writer.add_context_length(128)
    writer.add_embedding_length(TINY["hidden"])
    writer.add_feed_forward_length(TINY["ffn"])
    writer.add_head_count(TINY["heads"])
    writer.add_head_count_kv(TINY["kv_heads"])
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(TINY["vocab"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if arch == "gemma3":
        writer.add_key_length(TINY["head_dim"])
        writer.add_value_length(TINY["head_dim"])
        writer.add_sliding_window(8)
    else:
        writer.add_rope_dimension_count(TINY["head_dim"])
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, array in tensors.items():
        qtype = (quantize or {}).get(name)
        if qtype is None:
            writer.add_tensor(name, array)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
