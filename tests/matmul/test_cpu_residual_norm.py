"""A residual add and the RMSNorm after it as one native call (``add_rms_norm``) against the
XLA computation it replaces, and the dispatch that lets the ``cpu`` backend take it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu.ffi_targets import ADD_RMS_NORM
from esurge_attention_cpu.matmul_backend import FUSED_NORMS_ENV, CPUMatmulBackend
from esurge_attention_cpu.residual_norm import add_rms_norm as native_add_rms_norm

from esurge_core.matmul.dispatch import use_matmul_backend
from esurge_core.models.norms import add_rms_norm, rms_norm


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _inputs(rng, m: int, k: int, weight_dtype):
    x = jnp.asarray(rng.standard_normal((m, k)) * 3, jnp.float32)
    delta = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
    weight = jnp.asarray(1 + 0.3 * rng.standard_normal(k), weight_dtype)
    return x, delta, weight


@pytest.mark.parametrize(
    ("m", "k", "weight_dtype"),
    [
        (1, 576, "bfloat16"),  # a decode step's row
        (8, 576, "float32"),
        (100, 576, "bfloat16"),  # rows split over the library's workers
        (200, 64, "float32"),  # a prefill step's rows, on XLA's pool
        (5, 37, "bfloat16"),  # K not a multiple of the vector width
    ],
)
def test_matches_the_xla_add_and_norm(rng, m, k, weight_dtype):
    x, delta, weight = _inputs(rng, m, k, weight_dtype)
    total, normed = jax.jit(native_add_rms_norm, static_argnums=3)(x, delta, weight, 1e-5)
    want_total = x + delta
    want = rms_norm(want_total, weight, 1e-5)
    assert total.dtype == normed.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(total), np.asarray(want_total))
    # The mean's sum is added in another order than XLA's reduction: a few fp32 roundings.
    np.testing.assert_allclose(np.asarray(normed), np.asarray(want), rtol=4e-7, atol=0)


def test_a_zero_row_normalises_to_zero_and_large_rows_stay_finite():
    x = jnp.zeros((3, 64), jnp.float32).at[1].set(1e18).at[2].set(-1e-20)
    weight = jnp.ones((64,), jnp.bfloat16)
    total, normed = native_add_rms_norm(x, jnp.zeros_like(x), weight, 1e-6)
    np.testing.assert_array_equal(np.asarray(total), np.asarray(x))
    assert (np.asarray(normed[0]) == 0).all()
    np.testing.assert_allclose(np.asarray(normed[1]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(normed), np.asarray(rms_norm(x, weight, 1e-6)), rtol=4e-7, atol=1e-30
    )


@pytest.mark.parametrize(
    ("x", "delta", "weight", "eps", "message"),
    [
        ((4, 8), (4, 8), (9,), 1e-5, "weight"),
        ((4, 8), (3, 8), (8,), 1e-5, "delta"),
        ((8,), (8,), (8,), 1e-5, r"\[M, K\]"),
        ((4, 8), (4, 8), (8,), -1.0, "eps must be >= 0, got -1.0"),
    ],
)
def test_rejects_what_it_cannot_take(x, delta, weight, eps, message):
    with pytest.raises(ValueError, match=message):
        native_add_rms_norm(jnp.ones(x), jnp.ones(delta), jnp.ones(weight), eps)


def test_rejects_other_dtypes():
    x = jnp.ones((2, 8), jnp.float32)
    with pytest.raises(ValueError, match="float32"):
        native_add_rms_norm(x.astype(jnp.bfloat16), x, jnp.ones(8), 1e-5)
    with pytest.raises(ValueError, match="weight must be one of"):
        native_add_rms_norm(x, x, jnp.ones(8, jnp.float16), 1e-5)


def _targets(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


def test_the_cpu_backend_takes_float32_rows_and_xla_computes_the_rest(rng, monkeypatch):
    x, delta, weight = _inputs(rng, 4, 64, "bfloat16")

    def step(backend):
        def run(x, delta, weight):
            with use_matmul_backend(backend, jnp.int32(4)):
                return add_rms_norm(x, delta, weight, 1e-5)

        return run

    backend = CPUMatmulBackend()
    assert ADD_RMS_NORM in _targets(step(backend), x, delta, weight)
    assert ADD_RMS_NORM not in _targets(step(None), x, delta, weight)
    # bf16 rows are XLA's (the cast of the normalised rows is the model's, see norms.py).
    bf16 = x.astype(jnp.bfloat16), delta.astype(jnp.bfloat16), weight
    assert ADD_RMS_NORM not in _targets(step(backend), *bf16)
    got = jax.jit(step(backend))(x, delta, weight)
    want = jax.jit(step(None))(x, delta, weight)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=4e-7)
    monkeypatch.setenv(FUSED_NORMS_ENV, "0")
    off = CPUMatmulBackend()
    assert not off.takes_add_rms_norm(jax.ShapeDtypeStruct((4, 64), jnp.float32), weight)
    assert ADD_RMS_NORM not in _targets(step(off), x, delta, weight)
