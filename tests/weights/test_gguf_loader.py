"""Specification of `load_gguf` on tiny GGUF files: names, layouts, config and errors."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from esurge_core.weights.errors import (
    CheckpointNotFoundError,
    UnsupportedArchitectureError,
    UnsupportedConfigError,
    WeightLoadError,
)
from esurge_core.weights.gguf_loader import load_gguf, read_gguf_config
from tests.weights.tiny_gguf import TINY, tiny_tensors, write_tiny_gguf


def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf `permute` of Q/K rows (the transform to undo)."""
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def test_llama_tensors_get_hugging_face_names(tiny_gguf):
    path, _ = tiny_gguf("llama")
    names = set(load_gguf(path, progress=False).tensors)
    assert "model.embed_tokens.weight" in names
    assert "model.norm.weight" in names
    assert "model.layers.1.self_attn.o_proj.weight" in names
    assert "model.layers.1.post_attention_layernorm.weight" in names
    assert "model.layers.0.mlp.down_proj.weight" in names
    assert len(names) == 2 + 9 * TINY["layers"]


def test_llama_q_and_k_rows_are_unpermuted(tmp_path, rng):
    tensors = tiny_tensors("llama", rng)
    hf_q = tensors["blk.0.attn_q.weight"].copy()
    hf_k = tensors["blk.0.attn_k.weight"].copy()
    tensors["blk.0.attn_q.weight"] = llama_cpp_permute(hf_q, TINY["heads"])
    tensors["blk.0.attn_k.weight"] = llama_cpp_permute(hf_k, TINY["kv_heads"])
    model = load_gguf(write_tiny_gguf(tmp_path / "m.gguf", "llama", tensors), progress=False)
    np.testing.assert_array_equal(model.tensors["model.layers.0.self_attn.q_proj.weight"], hf_q)
    np.testing.assert_array_equal(model.tensors["model.layers.0.self_attn.k_proj.weight"], hf_k)


def test_llama_v_projection_is_not_permuted(tiny_gguf):
    path, tensors = tiny_gguf("llama")
    loaded = load_gguf(path, progress=False).tensors["model.layers.0.self_attn.v_proj.weight"]
    np.testing.assert_array_equal(loaded, tensors["blk.0.attn_v.weight"])


def test_gemma3_norm_weights_lose_the_stored_plus_one(tiny_gguf):
    path, tensors = tiny_gguf("gemma3")
    loaded = load_gguf(path, progress=False).tensors
    for gguf_name, hf_name in [
        ("blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight"),
        ("blk.1.post_ffw_norm.weight", "model.layers.1.post_feedforward_layernorm.weight"),
        ("output_norm.weight", "model.norm.weight"),
    ]:
        np.testing.assert_allclose(loaded[hf_name], tensors[gguf_name] - 1.0, rtol=0, atol=1e-6)


def test_gemma3_projections_are_not_permuted(tiny_gguf):
    path, tensors = tiny_gguf("gemma3")
    loaded = load_gguf(path, progress=False).tensors["model.layers.0.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(loaded, tensors["blk.0.attn_q.weight"])


def test_gemma3_block_norms_map_to_the_four_hugging_face_norms(tiny_gguf):
    path, _ = tiny_gguf("gemma3")
    names = set(load_gguf(path, progress=False).tensors)
    for norm in (
        "input_layernorm",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
    ):
        assert f"model.layers.0.{norm}.weight" in names


def test_quantised_tensors_are_dequantised_to_float32_in_hf_shape(tiny_gguf):
    path, tensors = tiny_gguf(
        "llama", quantize={"blk.0.ffn_up.weight": gguf.GGMLQuantizationType.Q8_0}
    )
    loaded = load_gguf(path, progress=False).tensors["model.layers.0.mlp.up_proj.weight"]
    original = tensors["blk.0.ffn_up.weight"]
    assert loaded.dtype == np.float32
    assert loaded.shape == original.shape
    np.testing.assert_allclose(loaded, original, atol=0.05)


def test_loaded_tensors_own_their_memory(tiny_gguf):
    path, _ = tiny_gguf("llama")
    weight = load_gguf(path, progress=False).tensors["model.norm.weight"]
    assert not isinstance(weight.base, np.memmap) and not isinstance(weight, np.memmap)
    assert weight.flags.writeable


def test_missing_output_weight_means_tied_embeddings(tiny_gguf):
    path, _ = tiny_gguf("llama", tied=True)
    model = load_gguf(path, progress=False)
    assert model.config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in model.tensors


def test_output_weight_becomes_lm_head(tiny_gguf):
    path, _ = tiny_gguf("llama", tied=False)
    model = load_gguf(path, progress=False)
    assert model.config["tie_word_embeddings"] is False
    assert "lm_head.weight" in model.tensors


def test_llama_config_has_hugging_face_fields(tiny_gguf):
    path, _ = tiny_gguf("llama")
    config = read_gguf_config(path)
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (TINY["hidden"], TINY["layers"])
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert (config["head_dim"], config["intermediate_size"]) == (TINY["head_dim"], TINY["ffn"])
    assert config["rope_theta"] == 10000.0
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert config["vocab_size"] == TINY["vocab"]
    assert config["max_position_embeddings"] == 128


def test_gemma3_config_has_the_local_global_layer_pattern(tiny_gguf):
    path, _ = tiny_gguf("gemma3")
    config = read_gguf_config(path)
    assert config["architectures"] == ["Gemma3ForCausalLM"]
    assert config["model_type"] == "gemma3_text"
    assert config["sliding_window"] == 8
    assert config["layer_types"] == ["sliding_attention"] * TINY["layers"]
    assert config["rope_local_base_freq"] == 10000.0
    assert config["query_pre_attn_scalar"] == TINY["head_dim"]
    assert config["final_logit_softcapping"] is None


def test_chat_template_comes_from_metadata(tiny_gguf):
    path, _ = tiny_gguf("llama", chat_template="{{ messages }}")
    assert load_gguf(path, progress=False).chat_template == "{{ messages }}"


def test_missing_file_is_reported_with_its_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"nowhere\.gguf"):
        load_gguf(tmp_path / "nowhere.gguf")


def test_garbage_file_is_not_a_gguf(tmp_path):
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(WeightLoadError, match=r"garbage\.gguf is not a GGUF file"):
        load_gguf(path)


def test_file_shorter_than_the_header_is_truncated(tmp_path):
    path = tmp_path / "short.gguf"
    path.write_bytes(b"GGUF\x03\x00")
    with pytest.raises(WeightLoadError, match=r"short\.gguf is truncated"):
        load_gguf(path)


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_file_is_reported_as_truncated(tiny_gguf, keep):
    path, _ = tiny_gguf("llama")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(WeightLoadError, match=r"tiny-llama\.gguf.*truncated"):
        load_gguf(path)


def test_unknown_gguf_version_is_rejected(tmp_path):
    path = tmp_path / "v99.gguf"
    path.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + bytes(64))
    with pytest.raises(WeightLoadError, match="GGUF version 99"):
        load_gguf(path)


def test_unsupported_architecture_names_the_file_and_the_supported_ones(tmp_path, rng):
    path = write_tiny_gguf(tmp_path / "falcon.gguf", "falcon", tiny_tensors("llama", rng))
    with pytest.raises(UnsupportedArchitectureError) as info:
        load_gguf(path)
    message = str(info.value)
    assert "falcon.gguf" in message and "'falcon'" in message
    assert "gemma3" in message and "llama" in message


def test_unsupported_tensor_type_names_the_type_and_the_tensor(tmp_path, rng):
    tensors = tiny_tensors("llama", rng)
    tensors["blk.0.ffn_up.weight"] = tensors["blk.0.ffn_up.weight"].astype(np.float64)
    path = write_tiny_gguf(tmp_path / "f64.gguf", "llama", tensors)
    with pytest.raises(WeightLoadError, match=r"f64\.gguf.*F64.*blk\.0\.ffn_up\.weight"):
        load_gguf(path, progress=False)


def test_tensor_without_hugging_face_counterpart_is_refused(tmp_path, rng):
    tensors = tiny_tensors("llama", rng) | {"blk.0.mystery.weight": np.ones(4, np.float32)}
    path = write_tiny_gguf(tmp_path / "extra.gguf", "llama", tensors)
    with pytest.raises(UnsupportedConfigError, match=r"blk\.0\.mystery\.weight"):
        load_gguf(path, progress=False)


def test_llama3_rope_frequency_table_is_refused(tmp_path, rng):
    tensors = tiny_tensors("llama", rng) | {"rope_freqs.weight": np.ones(2, np.float32)}
    path = write_tiny_gguf(tmp_path / "llama3.gguf", "llama", tensors)
    with pytest.raises(UnsupportedConfigError, match="rope_freqs"):
        load_gguf(path, progress=False)
