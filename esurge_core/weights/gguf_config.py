"""Translating GGUF metadata into a Hugging Face `config.json` dict.

GGUF files (llama.cpp's format) keep the model's hyper-parameters as key-value metadata under
an architecture prefix (`llama.block_count`, `gemma3.attention.sliding_window`, ...). The
models of eSurge are built from a Hugging Face config dict, so this module maps one onto the
other. Values that llama.cpp hard-codes per architecture instead of storing them (Gemma 3's
local/global layer pattern, its local RoPE base, its query scale) are filled in with the
values llama.cpp itself uses, which are also those of the Hugging Face configs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from esurge_core.weights.errors import UnsupportedConfigError

#: Metadata view the functions below read: GGUF key -> decoded Python value.
Metadata = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class GGUFArchitecture:
    """What eSurge knows about one GGUF `general.architecture`.

    Attributes:
        gguf_name: The value of `general.architecture` (e.g. "llama").
        hf_architecture: The Hugging Face class name put in `config["architectures"]`.
        model_type: The Hugging Face `model_type`.
        permuted_qk: Whether llama.cpp's converter permuted the rows of the Q and K projections
            (it does for the Llama family, whose RoPE it computes on interleaved pairs).
        norm_plus_one: Whether RMSNorm weights are stored as `1 + w` (the Gemma family).
        extra_config: Builds the architecture-specific part of the config from the metadata
            and the common part already built.
    """

    gguf_name: str
    hf_architecture: str
    model_type: str
    permuted_qk: bool
    norm_plus_one: bool
    extra_config: Callable[[Metadata, dict[str, Any]], dict[str, Any]]


def _llama_extra(meta: Metadata, config: dict[str, Any]) -> dict[str, Any]:
    return {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False}


def _qwen2_extra(meta: Metadata, config: dict[str, Any]) -> dict[str, Any]:
    # Qwen2 has biases on the Q, K and V projections (and only there).
    return {"hidden_act": "silu", "use_sliding_window": False}


def _qwen3_extra(meta: Metadata, config: dict[str, Any]) -> dict[str, Any]:
    return {"hidden_act": "silu", "attention_bias": False, "use_sliding_window": False}


# llama.cpp's Gemma 3 graph (src/models/gemma3.cpp and llama-model.cpp) hard-codes these:
# every sixth layer is global, local layers use RoPE base 10000, and the query scale is
# 1/sqrt(head_dim) except for the 62-layer 27B model, which uses 1/sqrt(hidden/heads).
_GEMMA3_SLIDING_WINDOW_PATTERN = 6
_GEMMA3_LOCAL_ROPE_BASE = 10000.0
_GEMMA3_27B_LAYERS = 62


def _gemma3_extra(meta: Metadata, config: dict[str, Any]) -> dict[str, Any]:
    num_layers = config["num_hidden_layers"]
    pattern = _GEMMA3_SLIDING_WINDOW_PATTERN
    layer_types = [
        "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
        for i in range(num_layers)
    ]
    if num_layers == _GEMMA3_27B_LAYERS:
        query_pre_attn_scalar = config["hidden_size"] // config["num_attention_heads"]
    else:
        query_pre_attn_scalar = config["head_dim"]
    global_rope = dict(config["rope_parameters"])
    local_rope = {"rope_type": "default", "rope_theta": _GEMMA3_LOCAL_ROPE_BASE}
    return {
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False,
        "sliding_window": int(_required(meta, "gemma3.attention.sliding_window")),
        "sliding_window_pattern": pattern,
        "layer_types": layer_types,
        "rope_local_base_freq": _GEMMA3_LOCAL_ROPE_BASE,
        "rope_parameters": {"full_attention": global_rope, "sliding_attention": local_rope},
        "query_pre_attn_scalar": query_pre_attn_scalar,
        "final_logit_softcapping": meta.get("gemma3.final_logit_softcapping"),
        "attn_logit_softcapping": meta.get("gemma3.attn_logit_softcapping"),
    }


#: Every GGUF architecture eSurge can load, keyed by `general.architecture`.
SUPPORTED_GGUF_ARCHITECTURES: dict[str, GGUFArchitecture] = {
    arch.gguf_name: arch
    for arch in (
        GGUFArchitecture("llama", "LlamaForCausalLM", "llama", True, False, _llama_extra),
        GGUFArchitecture("qwen2", "Qwen2ForCausalLM", "qwen2", False, False, _qwen2_extra),
        GGUFArchitecture("qwen3", "Qwen3ForCausalLM", "qwen3", False, False, _qwen3_extra),
        GGUFArchitecture("gemma3", "Gemma3ForCausalLM", "gemma3_text", False, True, _gemma3_extra),
    )
}


def _required(meta: Metadata, key: str) -> Any:
    if key not in meta:
        raise UnsupportedConfigError(
            f"GGUF metadata lacks {key!r}, which is needed to build the model config; "
            "the file was probably written by an incomplete converter."
        )
    return meta[key]


def _rope_parameters(meta: Metadata, arch: str) -> dict[str, Any]:
    theta = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
    scaling_type = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling_type in ("none", None):
        return {"rope_type": "default", "rope_theta": theta}
    if scaling_type == "linear":
        factor = float(_required(meta, f"{arch}.rope.scaling.factor"))
        return {"rope_type": "linear", "rope_theta": theta, "factor": factor}
    raise UnsupportedConfigError(
        f"GGUF RoPE scaling type {scaling_type!r} ({arch}.rope.scaling.type) is not supported; "
        "supported: 'none', 'linear'."
    )


def hf_config_from_gguf(
    meta: Metadata, arch: GGUFArchitecture, tensor_names: set[str], token_count: int | None
) -> dict[str, Any]:
    """Return the Hugging Face config dict of a GGUF model.

    Args:
        meta: The GGUF metadata, decoded (strings, numbers, lists).
        arch: The architecture entry of `general.architecture`.
        tensor_names: The GGUF tensor names, used to detect tied embeddings (no
            `output.weight`).
        token_count: Length of `tokenizer.ggml.tokens`, the vocabulary size when the
            metadata has no `<arch>.vocab_size`; None when the file has no vocabulary.

    Raises:
        UnsupportedConfigError: A required key is missing or a RoPE scaling type is unknown.
    """
    a = arch.gguf_name
    hidden = int(_required(meta, f"{a}.embedding_length"))
    heads = int(_required(meta, f"{a}.attention.head_count"))
    kv_heads = meta.get(f"{a}.attention.head_count_kv", heads)
    if isinstance(kv_heads, list):
        raise UnsupportedConfigError(
            f"GGUF {a}.attention.head_count_kv is a per-layer list {kv_heads!r}; "
            "eSurge needs one KV head count for all layers."
        )
    head_dim = meta.get(f"{a}.attention.key_length") or meta.get(f"{a}.rope.dimension_count")
    if head_dim is None:
        head_dim = hidden // heads
    vocab_size = meta.get(f"{a}.vocab_size") or token_count
    if vocab_size is None:
        raise UnsupportedConfigError(
            f"GGUF metadata has neither {a}.vocab_size nor tokenizer.ggml.tokens; "
            "the vocabulary size cannot be determined."
        )
    config: dict[str, Any] = {
        "architectures": [arch.hf_architecture],
        "model_type": arch.model_type,
        "hidden_size": hidden,
        "num_hidden_layers": int(_required(meta, f"{a}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(kv_heads),
        "head_dim": int(head_dim),
        "intermediate_size": int(_required(meta, f"{a}.feed_forward_length")),
        "rms_norm_eps": float(_required(meta, f"{a}.attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(_required(meta, f"{a}.context_length")),
        "vocab_size": int(vocab_size),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }
    rope = _rope_parameters(meta, a)
    config["rope_parameters"] = rope
    config["rope_theta"] = rope["rope_theta"]
    config.update(arch.extra_config(meta, config))
    return config
