"""RoPE parameters read from both config spellings, and frequencies equal to HF's."""

from __future__ import annotations

import numpy as np
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from esurge_core.models.rope import inverse_frequencies, rope_parameters_of

LLAMA3 = {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}


def test_old_style_rope_theta_and_rope_scaling_are_read():
    config = {"rope_theta": 500000.0, "rope_scaling": LLAMA3}
    assert rope_parameters_of(config, default_theta=1e4) == {**LLAMA3, "rope_theta": 500000.0}


def test_new_style_rope_parameters_are_read():
    config = {"rope_parameters": {**LLAMA3, "rope_theta": 500000.0}}
    assert rope_parameters_of(config, default_theta=1e4)["rope_theta"] == 500000.0


def test_missing_rope_settings_fall_back_to_the_family_default():
    assert rope_parameters_of({}, default_theta=1e6) == {"rope_type": "default", "rope_theta": 1e6}


def test_gemma3_local_base_comes_from_rope_local_base_freq_in_old_configs():
    config = {"rope_theta": 1e6, "rope_local_base_freq": 1e4, "rope_scaling": {"factor": 8.0}}
    local = rope_parameters_of(
        config,
        default_theta=1e4,
        layer_type="sliding_attention",
        legacy_theta_key="rope_local_base_freq",
        legacy_scaling=False,
    )
    assert local == {"rope_type": "default", "rope_theta": 1e4}


def test_llama3_frequencies_equal_transformers():
    config = transformers.LlamaConfig(
        hidden_size=256,
        num_attention_heads=2,
        max_position_embeddings=131072,
        rope_parameters={**LLAMA3, "rope_theta": 500000.0},
    )
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    ours = inverse_frequencies({**LLAMA3, "rope_theta": 500000.0}, 128, 131072)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6)


def test_linear_scaling_divides_every_frequency_by_the_factor():
    default = inverse_frequencies({"rope_type": "default", "rope_theta": 1e4}, 16, 128)
    linear = inverse_frequencies({"rope_type": "linear", "rope_theta": 1e4, "factor": 8.0}, 16, 128)
    np.testing.assert_allclose(linear, default / 8.0, rtol=1e-7)
