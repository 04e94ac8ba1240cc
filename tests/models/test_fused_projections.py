"""``fuse_projections`` / ``held_weight_paths`` / ``split_projections``: which sets of
projections become one weight, what stays apart, and taking them apart again."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from esurge_core.models.fused_projections import (
    fuse_projections,
    held_weight_paths,
    split_projections,
)
from esurge_core.models.params import ParamSpec, linear_spec

_rng = np.random.default_rng(0)


def _w(k: int, n: int, dtype=jnp.float32):
    return jnp.asarray(_rng.standard_normal((k, n)), dtype)


def _b(n: int):
    return jnp.asarray(_rng.standard_normal(n), jnp.float32)


def _attention(**extra):
    return {"q": _w(8, 8), "k": _w(8, 4), "v": _w(8, 4), "o": _w(8, 8), **extra}


ATTN_PATHS = [("layers", 0, "attn", name) for name in ("q", "k", "v", "o")]


def test_q_k_v_become_one_weight_in_column_order_with_their_biases():
    attn = _attention(q_bias=_b(8), k_bias=_b(4), v_bias=_b(4))
    q, k, v, bq, bk, bv = (attn[n] for n in ("q", "k", "v", "q_bias", "k_bias", "v_bias"))
    params = {"layers": [{"attn": attn}]}

    fuse_projections(params, ATTN_PATHS)

    assert sorted(attn) == ["o", "qkv", "qkv_bias"]  # fused in place, the parts removed
    np.testing.assert_array_equal(attn["qkv"], np.concatenate([q, k, v], axis=1))
    np.testing.assert_array_equal(attn["qkv_bias"], np.concatenate([bq, bk, bv]))
    assert held_weight_paths(params, ATTN_PATHS) == [
        ("layers", 0, "attn", "qkv"),
        ("layers", 0, "attn", "o"),
    ]


def test_gate_and_up_become_one_weight_and_down_stays():
    mlp = {"gate": _w(8, 16, jnp.bfloat16), "up": _w(8, 16, jnp.bfloat16), "down": _w(16, 8)}
    gate, up = mlp["gate"], mlp["up"]
    paths = [("mlp", "gate"), ("mlp", "up"), ("mlp", "down")]

    fuse_projections({"mlp": mlp}, paths)

    assert sorted(mlp) == ["down", "gate_up"]
    assert mlp["gate_up"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(mlp["gate_up"], np.concatenate([gate, up], axis=1))
    assert held_weight_paths({"mlp": mlp}, paths) == [("mlp", "gate_up"), ("mlp", "down")]


def test_a_set_with_only_some_biases_stays_apart():
    attn = _attention(q_bias=_b(8))
    params = {"layers": [{"attn": attn}]}
    fuse_projections(params, ATTN_PATHS)
    assert sorted(attn) == ["k", "o", "q", "q_bias", "v"]
    assert held_weight_paths(params, ATTN_PATHS) == ATTN_PATHS


def test_parts_that_are_not_all_matmul_weights_or_differ_in_dtype_stay_apart():
    attn = _attention()
    fuse_projections({"layers": [{"attn": attn}]}, [ATTN_PATHS[0], ATTN_PATHS[1]])
    assert sorted(attn) == ["k", "o", "q", "v"]
    mixed = {"gate": _w(8, 16), "up": _w(8, 16, jnp.bfloat16)}
    fuse_projections(mixed, [("gate",), ("up",)])
    assert sorted(mixed) == ["gate", "up"]


def test_split_gives_back_each_part_and_leaves_the_fused_params_as_they_were():
    attn = _attention(q_bias=_b(8), k_bias=_b(4), v_bias=_b(4))
    original = dict(attn)
    params = {"layers": [{"attn": attn}]}
    fuse_projections(params, ATTN_PATHS)
    specs = [
        linear_spec(ATTN_PATHS[0], "q", 8, 8, ("embed", "heads")),
        linear_spec(ATTN_PATHS[1], "k", 8, 4, ("embed", "kv_heads")),
        linear_spec(ATTN_PATHS[2], "v", 8, 4, ("embed", "kv_heads")),
        linear_spec(ATTN_PATHS[3], "o", 8, 8, ("heads", "embed")),
        ParamSpec(("layers", 0, "attn", "q_bias"), "q.bias", (8,), ("heads",)),
    ]

    split = split_projections(params, specs)

    assert sorted(split["layers"][0]["attn"]) == sorted(original)
    for name, value in original.items():
        np.testing.assert_array_equal(split["layers"][0]["attn"][name], value)
    assert sorted(attn) == ["o", "qkv", "qkv_bias"]  # the fused params are untouched
