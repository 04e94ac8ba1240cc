"""The bf16 kernel over weights packed at load (built on every CPU: the dot-product variant with
AVX512-BF16, the portable one elsewhere), and the ``cpu`` backend's packing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu.bf16_pair_matmul import (
    bf16_packed_matmul,
    pack_bf16_weight,
    unpack_bf16_weight,
)
from esurge_attention_cpu.matmul_backend import (
    DEFAULT_MAX_PAIR_ROWS,
    CPUMatmulBackend,
)

from esurge_core.matmul.backend import xla_matmul
from esurge_core.matmul.dispatch import matmul, use_matmul_backend
from esurge_core.matmul.packed_weight import PackedWeight


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _operands(rng, m, k, n, x_dtype="float32"):
    x = jnp.asarray(rng.standard_normal((m, k)), x_dtype)
    w = jnp.asarray(rng.standard_normal((k, n)) * 0.1, jnp.bfloat16)
    return x, w


def _assert_close(got, want, out_dtype="float32"):
    tol = 1e-4 if out_dtype == "float32" else 1e-2
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol
    )


@pytest.mark.parametrize(("k", "n"), [(64, 64), (35, 80), (577, 48), (8, 16)])
def test_packing_round_trips_and_has_the_documented_layout(rng, k, n):
    _, w = _operands(rng, 1, k, n)
    packed = pack_bf16_weight(w)
    assert packed.dtype == jnp.uint32 and packed.shape == (-(-n // 64), -(-k // 2), 64)
    np.testing.assert_array_equal(unpack_bf16_weight(packed, (k, n)), w)
    words = np.asarray(packed)
    bits = np.asarray(w).view(np.uint16)
    assert int(words[0, 0, 1]) == int(bits[0, 1]) | (int(bits[1, 1]) << 16)  # even k: low half
    np.testing.assert_array_equal(pack_bf16_weight(w.T, transpose_w=True), packed)


@pytest.mark.parametrize(("k", "n"), [(576, 576), (577, 100), (3, 16)])
def test_packing_a_constant_inside_jit_gives_the_same_words(rng, k, n):
    """XLA folds the packing of a weight a jitted function captures; the folded words must be
    the ones packing an argument gives (a bitcast form of the packing folded wrongly)."""
    x, w = _operands(rng, 2, k, n)
    want = pack_bf16_weight(w)
    np.testing.assert_array_equal(jax.jit(lambda: pack_bf16_weight(w))(), want)
    n_pad = -(-n // 16) * 16
    w_whole = jnp.pad(w, ((0, 0), (0, n_pad - n)))
    product = jax.jit(lambda x: bf16_packed_matmul(x, pack_bf16_weight(w_whole), 2, n=n_pad))
    _assert_close(product(x), xla_matmul(x, w_whole))


@pytest.mark.parametrize("x_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("out_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    ("m", "num_rows", "k", "n"),
    [
        (1, 1, 576, 192),  # single-request decode: column items narrower than a block
        (8, 5, 576, 1536),
        (64, 64, 576, 192),  # SmolLM2's k/v projection at a decode batch of 64
        (64, 50, 577, 48),  # odd K, one partial block, padding rows
        (100, 77, 600, 1008),  # a partial last block, row-pass tails
        (512, 300, 64, 128),  # row panels of 96 rows
    ],
)
def test_real_rows_match_xla_and_padding_rows_are_zero(rng, x_dtype, out_dtype, m, num_rows, k, n):
    x, w = _operands(rng, m, k, n, x_dtype)
    got = bf16_packed_matmul(x, pack_bf16_weight(w), jnp.int32(num_rows), n=n, out_dtype=out_dtype)
    assert got.shape == (m, n) and got.dtype == jnp.dtype(out_dtype)
    want = xla_matmul(x, w, out_dtype=out_dtype)
    _assert_close(np.asarray(got)[:num_rows], np.asarray(want)[:num_rows], out_dtype)
    assert not np.asarray(got, np.float32)[num_rows:].any()


@pytest.mark.parametrize(
    ("m", "num_rows", "k"),
    [
        (32, 31, 576),  # one row under the portable kernel's widening threshold
        (32, 32, 576),  # at it: one item of 32 rows per column block
        (2048, 2048, 577),  # a full prefill bucket: many row chunks per widened block, odd K
        (96, 70, 1536),  # K in eight blocks (SmolLM2's down projection)
    ],
)
def test_products_of_many_rows_match_xla_on_each_side_of_the_widening(rng, m, num_rows, k):
    x, w = _operands(rng, m, k, 192)
    got = bf16_packed_matmul(x, pack_bf16_weight(w), jnp.int32(num_rows), n=192)
    _assert_close(np.asarray(got)[:num_rows], np.asarray(xla_matmul(x, w))[:num_rows])
    assert not np.asarray(got)[num_rows:].any()


def test_chained_products_in_one_computation_each_use_their_own_weights(rng):
    # The portable kernel keeps a thread's widened block for its next item of the same
    # product (keyed by a per-call number, not only the address, since a later product's
    # weights may get a freed buffer); consecutive products, with weights packed inside the
    # computation, must each see their own.
    x = jnp.asarray(rng.standard_normal((256, 64)), jnp.float32)
    weights = [_operands(rng, 1, 64, 128)[1] for _ in range(4)]

    @jax.jit
    def chained(x, weights):
        y = x
        for w in weights:
            y = bf16_packed_matmul(y, pack_bf16_weight(w), jnp.int32(256), n=128)[:, :64]
        return y

    want = x
    for w in weights:
        want = xla_matmul(want, w)[:, :64]
    np.testing.assert_allclose(chained(x, weights), want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    ("x_shape", "packed_shape", "n", "x_dtype", "message"),
    [
        ((4, 64), (1, 31, 64), 64, "float32", r"need w_packed uint32\(1, 32, 64\)"),
        ((4, 64), (2, 32, 64), 64, "float32", r"need w_packed uint32\(1, 32, 64\)"),
        ((4, 64), (1, 32, 64), 40, "float32", "multiple of 16, got 40"),
        ((4, 64), (1, 32, 64), 64, "float16", "float16 is not one of"),
    ],
)
def test_bad_operands_are_rejected_with_the_reason(x_shape, packed_shape, n, x_dtype, message):
    x = jnp.zeros(x_shape, x_dtype)
    with pytest.raises(ValueError, match=message):
        bf16_packed_matmul(x, jnp.zeros(packed_shape, jnp.uint32), jnp.int32(1), n=n)


def test_backend_packs_bf16_weights_of_whole_vectors_only(rng):
    backend = CPUMatmulBackend()
    packed = backend.pack_weight(_operands(rng, 1, 96, 80)[1])
    assert isinstance(packed, PackedWeight) and packed.layout == backend.packed_layout
    assert packed.shape == (96, 80) and packed.dtype == jnp.bfloat16
    assert backend.pack_weight(jnp.zeros((96, 80), jnp.float32)) is None
    assert backend.pack_weight(jnp.zeros((96, 1000), jnp.bfloat16)) is None
    assert CPUMatmulBackend(pack_weights=False).pack_weight(_operands(rng, 1, 96, 80)[1]) is None


@pytest.mark.parametrize("rows", [3, 24, DEFAULT_MAX_PAIR_ROWS])
def test_backend_computes_packed_products_of_every_decode_size(rng, rows):
    backend = CPUMatmulBackend()
    x, w = _operands(rng, rows, 96, 80)
    packed = backend.pack_weight(w)
    with use_matmul_backend(backend, jnp.int32(rows)):
        got = jax.jit(lambda x, p: matmul(x, p))(x, packed)
    _assert_close(got, xla_matmul(x, w))


@pytest.mark.parametrize("real_fraction", [0.5, 1.0])
def test_large_buckets_of_packed_weights_go_to_the_kernel(rng, real_fraction):
    # Above ``max_pair_rows`` too, full or mostly padding: the kernel beat XLA's dot at every
    # size (docs/PERFORMANCE.md step 29); it computes only the real rows.
    backend = CPUMatmulBackend()
    rows = DEFAULT_MAX_PAIR_ROWS * 2
    real = int(real_fraction * rows) - 1
    x, w = _operands(rng, rows, 64, 48)
    packed = backend.pack_weight(w)
    assert backend.handles(x, packed, transpose_w=False, out_dtype=jnp.float32)
    step = jax.jit(
        lambda x, p, n: backend.matmul(x, p, n, transpose_w=False, out_dtype=jnp.float32)
    )
    got = np.asarray(step(x, packed, jnp.int32(real)))
    _assert_close(got[:real], np.asarray(xla_matmul(x, w))[:real])
    assert not got[real:].any()  # the kernel ran: XLA would have computed the padding rows


def test_without_bf16_pairs_a_prefill_bucket_of_packed_weights_reaches_the_kernel(rng):
    # The portable kernel takes every size, so ``handles`` must accept a packed weight above
    # ``max_pair_rows`` (it once declined it there, and every prefill product went to XLA's
    # bf16 dot on the weights unpacked in each step).
    backend = CPUMatmulBackend()
    object.__setattr__(backend, "bf16_pairs", False)  # as on a CPU without AVX512-BF16
    rows, real = DEFAULT_MAX_PAIR_ROWS * 4, DEFAULT_MAX_PAIR_ROWS * 4 - 3
    x, w = _operands(rng, rows, 96, 80)
    packed = backend.pack_weight(w)
    assert backend.handles(x, packed, transpose_w=False, out_dtype=jnp.float32)
    with use_matmul_backend(backend, jnp.int32(real)):
        got = np.asarray(jax.jit(lambda x, p: matmul(x, p))(x, packed))
    _assert_close(got[:real], np.asarray(xla_matmul(x, w))[:real])
    assert not got[real:].any()  # the kernel ran: XLA would have computed the padding rows


def test_without_bf16_pairs_unpacked_bf16_weights_of_decode_size_go_to_the_small_kernel(rng):
    backend = CPUMatmulBackend()
    object.__setattr__(backend, "bf16_pairs", False)  # as on a CPU without AVX512-BF16
    rows, real = 64, 40
    x, w = _operands(rng, rows, 96, 80)
    head = w.T  # stored [N, K], as the tied LM head
    assert backend.handles(x, head, transpose_w=True, out_dtype=jnp.float32)
    got = np.asarray(
        backend.matmul(x, head, jnp.int32(real), transpose_w=True, out_dtype=jnp.float32)
    )
    _assert_close(got[:real], np.asarray(xla_matmul(x, w))[:real])
    assert not got[real:].any()  # the kernel ran: it leaves padding rows zero
    big = jnp.zeros((DEFAULT_MAX_PAIR_ROWS + 1, 96), jnp.float32)
    assert not backend.handles(big, head, transpose_w=True, out_dtype=jnp.float32)
