"""Specification: on the real packaged GGUFs, `load_gguf` gives what transformers gives.

transformers' own GGUF integration (`from_pretrained(..., gguf_file=...)`) is the oracle for
tensor names, layouts (Q/K un-permutation, Gemma's `1 + w` norms) and config values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from esurge_core.weights.gguf_loader import GGUFModel, load_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

pytestmark = pytest.mark.slow

COMMON_KEYS = [
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "rms_norm_eps",
    "vocab_size",
    "max_position_embeddings",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "rope_parameters",
]
LLAMA_KEYS = [*COMMON_KEYS, "hidden_act", "attention_bias", "mlp_bias"]
GEMMA3_KEYS = [
    *COMMON_KEYS,
    "hidden_activation",
    "sliding_window",
    "layer_types",
    "query_pre_attn_scalar",
    "final_logit_softcapping",
    "attn_logit_softcapping",
]


def _load_both(path: Path) -> tuple[GGUFModel, dict[str, np.ndarray], dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ours = load_gguf(path, progress=False)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )
    state = {name: value.detach().numpy() for name, value in reference.state_dict().items()}
    return ours, state, reference.config.to_dict()


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    """(our GGUFModel, transformers' state dict, transformers' config) of SmolLM2."""
    return _load_both(smollm2_gguf)


@pytest.fixture(scope="module")
def gemma3(gemma3_gguf):
    """(our GGUFModel, transformers' state dict, transformers' config) of Gemma 3 270M."""
    return _load_both(gemma3_gguf)


def _assert_same_tensors(ours: GGUFModel, state: dict[str, np.ndarray]) -> None:
    # transformers materialises the tied lm_head; a tied checkpoint does not store it.
    assert set(state) - set(ours.tensors) == {"lm_head.weight"}
    assert set(ours.tensors) <= set(state)
    different = [
        name
        for name, weight in ours.tensors.items()
        if weight.dtype != np.float32 or not np.array_equal(weight, state[name])
    ]
    assert different == []


def test_smollm2_tensors_equal_transformers(smollm2):
    ours, state, _ = smollm2
    _assert_same_tensors(ours, state)


def test_smollm2_config_matches_transformers(smollm2):
    ours, _, reference = smollm2
    assert ours.config["architectures"] == ["LlamaForCausalLM"]
    assert {k: ours.config[k] for k in LLAMA_KEYS} == {k: reference[k] for k in LLAMA_KEYS}


def test_smollm2_carries_its_chat_template(smollm2):
    ours, _, _ = smollm2
    assert "<|im_start|>" in ours.chat_template


def test_gemma3_tensors_equal_transformers(gemma3):
    ours, state, _ = gemma3
    _assert_same_tensors(ours, state)


def test_gemma3_config_matches_transformers(gemma3):
    ours, _, reference = gemma3
    assert ours.config["architectures"] == ["Gemma3ForCausalLM"]
    assert {k: ours.config[k] for k in GEMMA3_KEYS} == {k: reference[k] for k in GEMMA3_KEYS}


def test_gemma3_has_five_local_layers_per_global_one(gemma3):
    ours, _, _ = gemma3
    assert ours.config["sliding_window"] == 512
    assert ours.config["layer_types"][:6] == ["sliding_attention"] * 5 + ["full_attention"]
    assert ours.chat_template is None
