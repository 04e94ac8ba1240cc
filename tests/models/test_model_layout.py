"""What a model declares besides its forward: KV-cache groups, logical axes, dtypes."""

from __future__ import annotations

import jax
import pytest

from esurge_core.kv_cache.groups import KVCacheGroupSpec, validate_groups
from esurge_core.models.registry import build_model
from esurge_core.weights.errors import UnsupportedConfigError
from tests.models.hf_reference import CASES, build_hf_model

AXIS_NAMES = {"vocab", "embed", "heads", "kv_heads", "mlp", "norm", "head_dim", "experts"}


def hf_config(hf_model) -> dict:
    """The config dict as save_pretrained writes it (which fills in "architectures")."""
    return {**hf_model.config.to_dict(), "architectures": [type(hf_model).__name__]}


def config_of(name: str) -> dict:
    return hf_config(build_hf_model(next(case for case in CASES if case.name == name)))


def test_gemma3_declares_a_local_and_a_global_group():
    model = build_model(config_of("gemma3"), "float32")
    assert model.kv_cache_groups() == [
        KVCacheGroupSpec("sliding_window", (0, 2), sliding_window=8),
        KVCacheGroupSpec("full", (1, 3)),
    ]
    assert model.layer_groups() == (0, 1, 0, 1)


def test_llama4_declares_chunked_rope_layers_and_global_nope_layers():
    model = build_model(config_of("llama4"), "float32")
    assert model.kv_cache_groups() == [
        KVCacheGroupSpec("chunked", (0, 2), chunk_size=8),
        KVCacheGroupSpec("full", (1, 3)),
    ]


def test_mistral_declares_one_sliding_window_group():
    model = build_model(config_of("mistral"), "float32")
    assert model.kv_cache_groups() == [KVCacheGroupSpec("sliding_window", (0, 1), 8)]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_groups_cover_every_layer_once(case):
    model = build_model(hf_config(build_hf_model(case)), "float32")
    groups = model.kv_cache_groups()
    validate_groups(groups)
    assert sorted(i for g in groups for i in g.layer_indices) == list(range(model.num_layers))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_logical_axes_name_every_dimension_of_every_param(case):
    hf = build_hf_model(case)
    model = build_model(hf_config(hf), "float32")
    state = {name: value.detach().numpy() for name, value in hf.state_dict().items()}
    params = model.load_params(state, progress=False)
    axes = model.logical_axes()
    assert jax.tree.structure(params) == jax.tree.structure(
        axes, is_leaf=lambda x: isinstance(x, tuple)
    )
    checked = jax.tree.map(lambda p, ax: len(ax) == p.ndim and set(ax) <= AXIS_NAMES, params, axes)
    assert all(jax.tree.leaves(checked))


def test_linear_weights_are_stored_input_by_output_with_matching_axes():
    model = build_model(config_of("qwen2"), "float32")
    axes = model.logical_axes()["layers"][0]
    assert axes["attn"]["q"] == ("embed", "heads")
    assert axes["attn"]["k_bias"] == ("kv_heads",)
    assert axes["attn"]["o"] == ("heads", "embed")
    assert axes["mlp"]["down"] == ("mlp", "embed")


def test_kv_cache_shape_interleaves_k_and_v_heads():
    model = build_model(config_of("qwen3"), "bfloat16")
    caches = model.init_kv_caches(num_pages=3, page_size=4)
    assert len(caches) == model.num_layers
    assert caches[0].shape == (3, 4, 2 * 2, 16)
    assert caches[0].dtype.name == "bfloat16"


def test_unsupported_dtype_is_refused_with_the_allowed_ones():
    with pytest.raises(UnsupportedConfigError, match=r"float16.*float32.*bfloat16"):
        build_model(config_of("qwen2"), "float16")


def test_unsupported_rope_type_is_refused_with_the_allowed_ones():
    config = config_of("qwen2")
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}
    with pytest.raises(UnsupportedConfigError, match=r"'yarn'.*llama3"):
        build_model(config, "float32")
