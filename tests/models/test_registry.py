"""The model registry: builds by config["architectures"][0], lists what it supports."""

from __future__ import annotations

import pytest

from esurge_core.models import MODEL_REGISTRY, ModelRegistry, build_model
from esurge_core.models.gemma3 import Gemma3ForCausalLM
from esurge_core.models.llama import LlamaFamilyForCausalLM
from esurge_core.models.llama4 import Llama4ForCausalLM
from esurge_core.weights.errors import UnsupportedArchitectureError

TINY = {
    "vocab_size": 32,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def test_builtin_architectures_are_registered():
    assert MODEL_REGISTRY.supported() == [
        "Gemma3ForCausalLM",
        "Llama4ForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
    ]


@pytest.mark.parametrize(
    ("architecture", "cls"),
    [
        ("LlamaForCausalLM", LlamaFamilyForCausalLM),
        ("Qwen3ForCausalLM", LlamaFamilyForCausalLM),
        ("Gemma3ForCausalLM", Gemma3ForCausalLM),
    ],
)
def test_build_model_picks_the_class_of_the_first_architecture(architecture, cls):
    model = build_model({**TINY, "architectures": [architecture]}, "float32")
    assert type(model) is cls


def test_llama4_builds_from_its_text_config():
    config = {
        **TINY,
        "architectures": ["Llama4ForCausalLM"],
        "intermediate_size_mlp": 32,
        "num_local_experts": 2,
    }
    assert isinstance(build_model(config, "bfloat16"), Llama4ForCausalLM)


def test_registered_builder_is_used_for_its_architecture():
    registry = ModelRegistry()
    registry.register("TinyForCausalLM", lambda config, dtype: ("built", dtype))
    assert registry.build({"architectures": ["TinyForCausalLM"]}, "float32") == (
        "built",
        "float32",
    )


def test_registering_an_architecture_twice_needs_replace():
    registry = ModelRegistry()
    registry.register("TinyForCausalLM", LlamaFamilyForCausalLM)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("TinyForCausalLM", Gemma3ForCausalLM)
    registry.register("TinyForCausalLM", Gemma3ForCausalLM, replace=True)
    assert "TinyForCausalLM" in registry


def test_unknown_architecture_error_lists_every_supported_one():
    with pytest.raises(UnsupportedArchitectureError) as info:
        build_model({**TINY, "architectures": ["MambaForCausalLM"]}, "float32")
    message = str(info.value)
    assert "'MambaForCausalLM'" in message
    for architecture in MODEL_REGISTRY.supported():
        assert architecture in message
