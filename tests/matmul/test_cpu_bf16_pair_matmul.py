"""The AVX512-BF16 pair kernel against XLA's product, and where the ``cpu`` backend uses it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu.bf16_pair_matmul import bf16_pair_matmul
from esurge_attention_cpu.ffi_targets import bf16_pairs_available
from esurge_attention_cpu.matmul_backend import (
    DEFAULT_MAX_PAIR_ROWS,
    DEFAULT_MAX_ROWS,
    PAIR_REAL_ROWS_FRACTION,
    CPUMatmulBackend,
)

from esurge_core.matmul.backend import xla_matmul

pytestmark = pytest.mark.skipif(
    not bf16_pairs_available(), reason="this CPU has no AVX512-BF16 (the kernel is not built)"
)
DTYPES = ["float32", "bfloat16"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _operands(rng, m, k, n, x_dtype, transpose_w):
    x = jnp.asarray(rng.standard_normal((m, k)), x_dtype)
    w = jnp.asarray(rng.standard_normal((n, k) if transpose_w else (k, n)) * 0.1, jnp.bfloat16)
    return x, w


def _assert_close(got, want, out_dtype):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    # Exact bf16 products summed in fp32 in another order: fp32 results agree to rounding,
    # bf16 results to one ulp.
    tol = 1e-4 if out_dtype == "float32" else 1e-2
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize("x_dtype", DTYPES)
@pytest.mark.parametrize("out_dtype", DTYPES)
def test_matches_xla_for_every_dtype_combination(rng, transpose_w, x_dtype, out_dtype):
    x, w = _operands(rng, 24, 96, 80, x_dtype, transpose_w)
    got = bf16_pair_matmul(x, w, jnp.int32(24), transpose_w=transpose_w, out_dtype=out_dtype)
    assert got.dtype == jnp.dtype(out_dtype) and got.shape == (24, 80)
    want = xla_matmul(x, w, transpose_w=transpose_w, out_dtype=out_dtype)
    _assert_close(got, want, out_dtype)


@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize(
    ("m", "num_rows", "k", "n"),
    [
        (16, 9, 64, 64),  # one column block, rows split over the threads
        (64, 64, 576, 192),  # SmolLM2's k/v projection at a decode batch of 64
        (64, 50, 577, 48),  # odd K (last pair half empty), padding rows
        (13, 13, 35, 16),  # K off the 16 x 16 transpose tile, one vector of columns
        (100, 77, 600, 1008),  # many blocks, a partial last block, row-pass tails
        (256, 256, 64, 32),  # few blocks: the rows are split into chunks
    ],
)
def test_real_rows_match_xla_and_padding_rows_are_zero(rng, transpose_w, m, num_rows, k, n):
    x, w = _operands(rng, m, k, n, "float32", transpose_w)
    got = np.asarray(
        bf16_pair_matmul(x, w, jnp.int32(num_rows), transpose_w=transpose_w, out_dtype="float32")
    )
    want = np.asarray(xla_matmul(x, w, transpose_w=transpose_w, out_dtype="float32"))
    _assert_close(got[:num_rows], want[:num_rows], "float32")
    assert not got[num_rows:].any()


def test_row_count_is_clamped_and_can_be_traced(rng):
    x, w = _operands(rng, 32, 48, 64, "float32", False)
    want = np.asarray(xla_matmul(x, w))
    _assert_close(bf16_pair_matmul(x, w, jnp.int32(99)), want, "float32")
    assert not np.asarray(bf16_pair_matmul(x, w, jnp.int32(-3))).any()
    traces = []

    @jax.jit
    def step(x, rows):
        traces.append(1)
        return bf16_pair_matmul(x, w, rows)

    for rows in (9, 20, 32):
        got = np.asarray(step(x, jnp.int32(rows)))
        _assert_close(got[:rows], want[:rows], "float32")
        assert not got[rows:].any()
    assert len(traces) == 1


def test_non_finite_activations_propagate(rng):
    x, w = _operands(rng, 16, 32, 32, "float32", False)
    x = x.at[0, 3].set(jnp.nan).at[1, 0].set(jnp.inf)
    got = np.asarray(bf16_pair_matmul(x, w, jnp.int32(16)))
    assert np.isnan(got[0]).all()
    assert not np.isfinite(got[1]).all()
    assert np.isfinite(got[2:]).all()


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "transpose_w", "x_dtype", "w_dtype", "message"),
    [
        ((16, 8, 2), (8, 16), False, "float32", "bfloat16", "takes matrices"),
        ((16, 8), (9, 16), False, "float32", "bfloat16", "has K = 9"),
        ((16, 8), (16, 9), True, "float32", "bfloat16", "has K = 9"),
        ((16, 8), (8, 20), False, "float32", "bfloat16", "multiple of 16, got 20"),
        ((16, 8), (8, 16), False, "float32", "float32", "w must be bfloat16"),
        ((16, 8), (8, 16), False, "float16", "bfloat16", "float16 is not one of"),
    ],
)
def test_bad_operands_are_rejected_with_the_reason(
    x_shape, w_shape, transpose_w, x_dtype, w_dtype, message
):
    x = jnp.zeros(x_shape, x_dtype)
    w = jnp.zeros(w_shape, w_dtype)
    with pytest.raises(ValueError, match=message):
        bf16_pair_matmul(x, w, jnp.int32(1), transpose_w=transpose_w)


def test_backend_takes_batched_decode_rows_only_with_bf16_weights_and_whole_vectors():
    backend = CPUMatmulBackend()
    assert backend.bf16_pairs

    def handles(rows, n=1536, w_dtype=jnp.bfloat16, transpose_w=False):
        x = jax.ShapeDtypeStruct((rows, 576), jnp.float32)
        shape = (n, 576) if transpose_w else (576, n)
        w = jax.ShapeDtypeStruct(shape, w_dtype)
        return backend.handles(x, w, transpose_w=transpose_w, out_dtype=jnp.float32)

    assert handles(DEFAULT_MAX_ROWS + 1) and handles(DEFAULT_MAX_PAIR_ROWS)
    assert handles(64, transpose_w=True)
    assert handles(2048)  # decided in the step: see the next test
    assert not handles(64, w_dtype=jnp.float32)  # fp32 weights: XLA
    assert not handles(64, n=1000)  # columns not whole vectors: XLA
    assert handles(4, w_dtype=jnp.float32)  # decode-sized: the small-row kernel takes any dtype


def test_large_buckets_go_to_the_kernel_only_when_mostly_padding(rng):
    # Above max_pair_rows XLA's dot is faster per row, but it computes every padded row: the
    # kernel (which zeroes the padding rows) runs only when few enough rows are real.
    backend = CPUMatmulBackend()
    rows = DEFAULT_MAX_PAIR_ROWS * 2
    x, w = _operands(rng, rows, 64, 48, "float32", False)
    want = np.asarray(xla_matmul(x, w))
    step = jax.jit(lambda x, n: backend.matmul(x, w, n, transpose_w=False, out_dtype=jnp.float32))
    few = int(PAIR_REAL_ROWS_FRACTION * rows) - 10
    got = np.asarray(step(x, jnp.int32(few)))
    _assert_close(got[:few], want[:few], "float32")
    assert not got[few:].any()  # the kernel ran
    got = np.asarray(step(x, jnp.int32(rows - 1)))
    _assert_close(got, want, "float32")  # XLA ran: the padding row is computed too
