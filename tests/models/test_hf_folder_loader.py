"""Loading a Hugging Face folder: shards, dtypes, extras, and errors that name the culprit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from esurge_core.models.registry import build_model
from esurge_core.weights import (
    CheckpointNotFoundError,
    MissingTensorError,
    SafetensorsCheckpoint,
    TensorShapeError,
    UnsupportedArchitectureError,
    load_hf_folder,
    load_hf_model,
)
from tests.models.hf_reference import CASES, build_hf_model, save_hf_model

LLAMA = next(case for case in CASES if case.name == "llama3-rope")


@pytest.fixture(scope="module")
def llama_hf():
    return build_hf_model(LLAMA)


@pytest.fixture
def llama_folder(llama_hf, tmp_path):
    return save_hf_model(llama_hf, tmp_path / "llama")


def rewrite_weights(folder, edit):
    """Apply `edit(tensors_dict)` to the folder's single safetensors file."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_sharded_folder_reads_every_tensor_through_the_index(llama_hf, tmp_path):
    folder = save_hf_model(llama_hf, tmp_path / "sharded", max_shard_size="40KB")
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("*.safetensors"))) > 1
    _, tensors = load_hf_folder(folder)
    state = llama_hf.state_dict()
    assert set(tensors) == set(state)
    for name, value in state.items():
        np.testing.assert_array_equal(tensors[name], value.detach().numpy())


def test_bfloat16_checkpoint_is_read_bit_exactly(llama_hf, tmp_path):
    folder = save_hf_model(llama_hf.to(torch.bfloat16), tmp_path / "bf16")
    llama_hf.to(torch.float32)
    _, tensors = load_hf_folder(folder)
    weight = tensors["model.embed_tokens.weight"]
    assert weight.dtype.name == "bfloat16"
    expected = llama_hf.model.embed_tokens.weight.detach().to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(weight.astype(np.float32), expected)


def test_shapes_are_known_without_reading_data(llama_folder):
    checkpoint = SafetensorsCheckpoint.from_folder(llama_folder)
    assert checkpoint.shape_of("model.layers.0.self_attn.k_proj.weight") == (32, 64)


def test_extra_tensors_such_as_rotary_inv_freq_are_ignored(llama_folder):
    extra = "model.layers.0.self_attn.rotary_emb.inv_freq"
    rewrite_weights(llama_folder, lambda t: t.update({extra: np.ones(8, np.float32)}))
    _, params = load_hf_model(llama_folder, progress=False)
    assert params["layers"][0]["attn"]["q"].shape == (64, 64)


def test_params_take_the_requested_dtype(llama_folder):
    _, params = load_hf_model(llama_folder, "bfloat16", progress=False)
    assert params["layers"][1]["mlp"]["down"].dtype.name == "bfloat16"


def test_missing_tensor_is_named(llama_folder):
    name = "model.layers.1.mlp.up_proj.weight"
    rewrite_weights(llama_folder, lambda t: t.pop(name))
    with pytest.raises(MissingTensorError, match=r"model\.layers\.1\.mlp\.up_proj\.weight") as info:
        load_hf_model(llama_folder, progress=False)
    assert info.value.tensor_name == name


def test_wrongly_shaped_tensor_is_named_with_both_shapes(llama_folder):
    name = "model.layers.0.self_attn.v_proj.weight"
    rewrite_weights(llama_folder, lambda t: t.update({name: np.zeros((48, 64), np.float32)}))
    with pytest.raises(TensorShapeError, match=r"v_proj\.weight.*\(48, 64\).*\(32, 64\)") as info:
        load_hf_model(llama_folder, progress=False)
    assert (info.value.expected, info.value.actual) == ((32, 64), (48, 64))


def test_config_that_disagrees_with_the_weights_is_a_shape_error(llama_folder):
    config_path = llama_folder / "config.json"
    config = json.loads(config_path.read_text())
    config["intermediate_size"] = 96
    config_path.write_text(json.dumps(config))
    with pytest.raises(TensorShapeError, match=r"gate_proj\.weight"):
        load_hf_model(llama_folder, progress=False)


def test_unsupported_architecture_is_named_with_the_supported_list(llama_folder):
    config_path = llama_folder / "config.json"
    config = json.loads(config_path.read_text())
    config["architectures"] = ["FalconForCausalLM"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="FalconForCausalLM") as info:
        load_hf_model(llama_folder, progress=False)
    assert "LlamaForCausalLM" in str(info.value)
    assert "Gemma3ForCausalLM" in info.value.supported


def test_folder_without_config_is_reported(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        load_hf_folder(tmp_path)


def test_folder_without_safetensors_is_reported(llama_folder):
    (llama_folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="no safetensors weights"):
        load_hf_folder(llama_folder)


def test_numpy_state_dict_loads_like_a_folder(llama_hf, llama_folder):
    # The GGUF loader hands over a plain dict of numpy arrays; load_params takes it as is.
    config, _ = load_hf_folder(llama_folder)
    state = {name: value.detach().numpy() for name, value in llama_hf.state_dict().items()}
    params = build_model(config, "float32").load_params(state, progress=False)
    np.testing.assert_array_equal(
        np.asarray(params["layers"][0]["attn"]["o"]),
        state["model.layers.0.self_attn.o_proj.weight"].T,
    )
