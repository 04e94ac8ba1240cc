"""The fused gate/up product of a gated MLP (``bf16_packed_gated_matmul``: the packed product
with SiLU or tanh-GELU applied as the kernel writes its result), the ``cpu`` backend's
``gated_matmul`` and the core's ``gated_matmul`` dispatch. The kernel needs AVX512-BF16; on
other CPUs the backend declines and the product goes through ``matmul`` and XLA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu.bf16_pair_matmul import bf16_packed_gated_matmul, pack_bf16_weight
from esurge_attention_cpu.ffi_targets import BF16_PACKED_GATED_MATMUL, bf16_pairs_available
from esurge_attention_cpu.matmul_backend import CPUMatmulBackend

from esurge_core.matmul.backend import xla_matmul
from esurge_core.matmul.dispatch import gated_matmul, use_matmul_backend
from esurge_core.models.activations import activation

HAS_BF16_PAIRS = bf16_pairs_available()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _gate_up(rng, m, k, n, x_dtype="float32"):
    x = jnp.asarray(rng.standard_normal((m, k)) * 2, x_dtype)
    w = jnp.asarray(rng.standard_normal((k, n)) * 0.1, jnp.bfloat16)
    return x, w


def _float64_reference(x, w, name: str, rows: int) -> np.ndarray:
    """act(gate) * up in float64 from the fp32 product (bf16 inputs, as the kernel's)."""
    gate_up = np.asarray(xla_matmul(x, w, out_dtype=jnp.float32), np.float64)[:rows]
    half = gate_up.shape[1] // 2
    g, up = gate_up[:, :half], gate_up[:, half:]
    if name == "silu":
        return g / (1 + np.exp(-g)) * up
    return 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3))) * up


@pytest.mark.skipif(not HAS_BF16_PAIRS, reason="the fused kernel needs AVX512-BF16")
@pytest.mark.parametrize("name", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("x_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("out_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    ("m", "rows", "k", "n"),
    [
        (1, 1, 576, 3072),  # single-request decode (vector path, narrow column items)
        (8, 5, 64, 128),  # a few real rows of a padded bucket
        (64, 64, 576, 3072),  # batched decode (tile unit where there is one)
        (700, 613, 1536, 1152),  # several row chunks, a partial last tile
        (2048, 2048, 576, 3072),  # a prefill step: the output is streamed
    ],
)
def test_matches_the_float64_formula_and_zeroes_padding(
    rng, name, x_dtype, out_dtype, m, rows, k, n
):
    x, w = _gate_up(rng, m, k, n, x_dtype)
    got = jax.jit(
        lambda x, p, r: bf16_packed_gated_matmul(x, p, r, n=n, activation=name, out_dtype=out_dtype)
    )(x, pack_bf16_weight(w), jnp.int32(rows))
    assert got.shape == (m, n // 2) and got.dtype == jnp.dtype(out_dtype)
    got = np.asarray(got, np.float64)
    want = _float64_reference(x, w, name, rows)
    # fp32: the product's own rounding (sums in another order than XLA's); bf16: one rounding.
    tol = 1e-5 if out_dtype == "float32" else 8e-3
    np.testing.assert_allclose(got[:rows], want, rtol=tol, atol=tol * np.abs(want).max())
    assert not got[rows:].any()


def test_rejects_what_it_does_not_take(rng):
    x, w = _gate_up(rng, 4, 64, 256)
    packed = pack_bf16_weight(w)
    with pytest.raises(ValueError, match="activation 'relu' is not one of"):
        bf16_packed_gated_matmul(x, packed, jnp.int32(4), n=256, activation="relu")
    x, w = _gate_up(rng, 4, 64, 192)
    with pytest.raises(ValueError, match="N must be a multiple of 128"):
        bf16_packed_gated_matmul(x, pack_bf16_weight(w), jnp.int32(4), n=192, activation="silu")
    with pytest.raises(ValueError, match="need w_packed"):
        bf16_packed_gated_matmul(x, packed, jnp.int32(4), n=192 * 2, activation="silu")


@pytest.mark.parametrize("hf_name", ["silu", "gelu_pytorch_tanh", "gelu"])
def test_dispatch_fuses_where_the_backend_takes_it_and_falls_back_to_xla(rng, hf_name):
    backend = CPUMatmulBackend()
    act = activation(hf_name)
    x, w = _gate_up(rng, 24, 576, 512)
    packed = backend.pack_weight(w)
    rows = jnp.int32(20)

    def step(x):
        with use_matmul_backend(backend, rows):
            return gated_matmul(x, packed, act)

    fused = backend.handles_gated(
        jax.ShapeDtypeStruct(x.shape, x.dtype), packed, activation=act.name, out_dtype=x.dtype
    )
    assert fused == (HAS_BF16_PAIRS and act.name in ("silu", "gelu_tanh"))
    assert (BF16_PACKED_GATED_MATMUL in str(jax.make_jaxpr(step)(x))) == fused
    gate_up = np.asarray(xla_matmul(x, w, out_dtype=jnp.float32))
    want = np.asarray(act(jnp.asarray(gate_up[:, :256]))) * gate_up[:, 256:]
    np.testing.assert_allclose(np.asarray(step(x))[:20], want[:20], rtol=1e-4, atol=1e-4)
    # Outside a backend (a model called directly): matmul and XLA's activation.
    np.testing.assert_allclose(np.asarray(gated_matmul(x, w, act)), want, rtol=1e-4, atol=1e-4)
