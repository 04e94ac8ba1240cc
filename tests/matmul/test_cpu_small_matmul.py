"""The native CPU matmul kernel against XLA's product, and the ``cpu`` matmul backend's rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu.matmul_backend import DEFAULT_MAX_ROWS, CPUMatmulBackend
from esurge_attention_cpu.small_matmul import small_matmul

from esurge_core.matmul.backend import xla_matmul
from esurge_core.matmul.dispatch import matmul, use_matmul_backend

DTYPES = ["float32", "bfloat16"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _operands(rng, m, k, n, x_dtype, w_dtype, transpose_w):
    x = jnp.asarray(rng.standard_normal((m, k)), x_dtype)
    shape = (n, k) if transpose_w else (k, n)
    w = jnp.asarray(rng.standard_normal(shape) * 0.1, w_dtype)
    return x, w


def _assert_close(got, want, out_dtype):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    # Summation order differs from XLA's: fp32 sums agree to rounding; bf16 results to one ulp.
    tol = 1e-4 if out_dtype == "float32" else 1e-2
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize("x_dtype", DTYPES)
@pytest.mark.parametrize("w_dtype", DTYPES)
@pytest.mark.parametrize("out_dtype", DTYPES)
def test_matches_xla_for_every_dtype_combination(rng, transpose_w, x_dtype, w_dtype, out_dtype):
    x, w = _operands(rng, 8, 96, 80, x_dtype, w_dtype, transpose_w)
    got = small_matmul(x, w, jnp.int32(8), transpose_w=transpose_w, out_dtype=out_dtype)
    assert got.dtype == jnp.dtype(out_dtype) and got.shape == (8, 80)
    want = xla_matmul(x, w, transpose_w=transpose_w, out_dtype=out_dtype)
    _assert_close(got, want, out_dtype)


@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize(
    ("m", "num_rows", "k", "n"),
    [
        (8, 1, 64, 64),  # one real row of a padded bucket
        (8, 2, 35, 70),  # two rows (ranges of weight rows), K and N off the vector width
        (8, 1, 7, 33),  # fewer weight rows than one range per thread
        (8, 5, 100, 70),  # sizes off the vector width: column and K tails
        (16, 13, 33, 7),  # fewer columns than one block
        (64, 64, 48, 96),  # several passes over the rows (8 and 4 per pass)
        (8, 3, 17, 1000),  # many column blocks over the thread pool
    ],
)
def test_real_rows_match_xla_and_padding_rows_are_zero(rng, transpose_w, m, num_rows, k, n):
    x, w = _operands(rng, m, k, n, "float32", "bfloat16", transpose_w)
    got = np.asarray(small_matmul(x, w, jnp.int32(num_rows), transpose_w=transpose_w))
    want = np.asarray(xla_matmul(x, w, transpose_w=transpose_w))
    _assert_close(got[:num_rows], want[:num_rows], "float32")
    assert not got[num_rows:].any()


def test_row_count_is_clamped_to_the_matrix(rng):
    x, w = _operands(rng, 4, 32, 32, "float32", "float32", False)
    np.testing.assert_allclose(
        small_matmul(x, w, jnp.int32(99)), xla_matmul(x, w), rtol=1e-5, atol=1e-5
    )
    assert not np.asarray(small_matmul(x, w, jnp.int32(-3))).any()


def test_row_count_can_be_traced(rng):
    x, w = _operands(rng, 8, 64, 64, "float32", "bfloat16", False)
    run = jax.jit(lambda x, w, rows: small_matmul(x, w, rows))
    for rows in (2, 6):
        got = np.asarray(run(x, w, jnp.int32(rows)))
        _assert_close(got[:rows], np.asarray(xla_matmul(x, w))[:rows], "float32")
        assert not got[rows:].any()


def test_non_finite_activations_propagate(rng):
    x, w = _operands(rng, 2, 32, 32, "float32", "bfloat16", False)
    x = x.at[0, 3].set(jnp.nan).at[1, 0].set(jnp.inf)
    got = np.asarray(small_matmul(x, w, jnp.int32(2)))
    assert np.isnan(got[0]).all()
    assert not np.isfinite(got[1]).all()


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "transpose_w", "dtype", "message"),
    [
        ((4, 8, 2), (8, 8), False, "float32", "takes matrices"),
        ((4, 8), (9, 8), False, "float32", "has K = 9"),
        ((4, 8), (8, 9), True, "float32", "has K = 9"),
        ((4, 8), (8, 8), False, "float16", "float16 is not one of"),
    ],
)
def test_bad_operands_are_rejected_with_the_reason(x_shape, w_shape, transpose_w, dtype, message):
    x = jnp.zeros(x_shape, dtype)
    w = jnp.zeros(w_shape, "float32")
    with pytest.raises(ValueError, match=message):
        small_matmul(x, w, jnp.int32(1), transpose_w=transpose_w)


def test_backend_handles_decode_sized_products_of_any_dtype():
    backend = CPUMatmulBackend()

    def handles(rows, dtype="float32", w_dtype=jnp.bfloat16):
        x = jax.ShapeDtypeStruct((rows, 576), dtype)
        w = jax.ShapeDtypeStruct((576, 1536), w_dtype)
        return backend.handles(x, w, transpose_w=False, out_dtype=jnp.float32)

    assert handles(1) and handles(DEFAULT_MAX_ROWS)
    assert handles(1, w_dtype=jnp.float32) and handles(DEFAULT_MAX_ROWS, "bfloat16")
    # More rows: only bf16 weights, through the pair kernel (tests/matmul/
    # test_cpu_bf16_pair_matmul.py); fp32 weights stay with XLA.
    assert not handles(DEFAULT_MAX_ROWS + 1, w_dtype=jnp.float32)
    assert not handles(8, "float16")


def test_dispatch_routes_only_inside_the_context(rng):
    x, w = _operands(rng, 8, 64, 64, "float32", "bfloat16", False)

    def traced(rows):
        with use_matmul_backend(CPUMatmulBackend(), rows):
            return matmul(x, w)

    inside = np.asarray(jax.jit(traced)(jnp.int32(3)))
    assert not inside[3:].any()  # the kernel zeroes padding rows; XLA would not
    _assert_close(inside[:3], np.asarray(matmul(x, w))[:3], "float32")
    big = jnp.ones((DEFAULT_MAX_ROWS * 2, 64), jnp.float32)
    w32 = w.astype(jnp.float32)
    with use_matmul_backend(CPUMatmulBackend(), jnp.int32(1)):
        prefill = np.asarray(matmul(big, w32))
    assert prefill[1:].any()  # fp32 weights, too many rows: XLA computed every row


@pytest.mark.parametrize(
    "env",
    [
        {"ESURGE_CPU_KERNEL_THREADS": "1"},
        {"ESURGE_CPU_KERNEL_THREADS": "3", "ESURGE_CPU_KERNEL_SPIN_US": "0"},
        {"ESURGE_CPU_KERNEL_THREADS": "zero", "ESURGE_CPU_KERNEL_SPIN_US": "-5"},  # ignored
        {"ESURGE_CPU_KERNEL_POOL": "own"},
        {"ESURGE_CPU_KERNEL_POOL": "own", "ESURGE_CPU_KERNEL_THREADS": "3"},
        {"ESURGE_CPU_KERNEL_POOL": "xla", "ESURGE_CPU_KERNEL_THREADS": "1"},
    ],
)
def test_pool_size_and_spin_settings_keep_the_results(env):
    """The worker pool is per process, so each setting runs in a fresh interpreter.

    The packed product of 300 rows has more items than threads, so threads steal from each
    other's shares."""
    import os
    import subprocess
    import sys

    script = """
import jax.numpy as jnp, numpy as np
from esurge_attention_cpu.small_matmul import small_matmul
from esurge_core.matmul.backend import xla_matmul
rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((8, 200)), jnp.float32)
w = jnp.asarray(rng.standard_normal((200, 300)), jnp.bfloat16)
for rows in (1, 8):
    got = np.asarray(small_matmul(x, w, jnp.int32(rows)))[:rows]
    np.testing.assert_allclose(got, np.asarray(xla_matmul(x, w))[:rows], rtol=1e-4, atol=1e-4)
import jax
from esurge_attention_cpu.bf16_pair_matmul import bf16_packed_matmul, pack_bf16_weight
big = jnp.asarray(rng.standard_normal((300, 200)), jnp.float32)
w2 = jnp.asarray(rng.standard_normal((200, 320)), jnp.bfloat16)
product = jax.jit(lambda x, p, n: bf16_packed_matmul(x, p, n, n=320, out_dtype=jnp.float32))
for rows in (299, 300):
    got = np.asarray(product(big, pack_bf16_weight(w2), jnp.int32(rows)))
    np.testing.assert_allclose(
        got[:rows], np.asarray(xla_matmul(big, w2))[:rows], rtol=1e-4, atol=1e-3)
    assert not got[rows:].any()
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
