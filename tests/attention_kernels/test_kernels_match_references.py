"""The Pallas kernels (TPU and Triton, in interpret mode) and the native CPU kernel, against
JAX's reference and XLA.

Every case draws fresh random ragged batches (mixed prefill and decode, padding tokens and
padding sequence rows, pages scattered over a shared pool, garbage in the null page). Oracles:
JAX's ``ref_ragged_paged_attention`` (full, sliding window, soft cap), the ``xla`` backend and a
float64 dense reference (chunked attention, which JAX's reference lacks). Jitted kernels are
shared across cases with the same static configuration, so each compiles once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu import kernel as cpu_kernel
from esurge_attention_pallas import kernel as pallas_kernel
from esurge_attention_triton import kernel as triton_kernel
from esurge_attention_xla import kernel as xla_kernel
from jax.experimental.pallas.ops.tpu.ragged_paged_attention import ref_ragged_paged_attention

from tests.attention.ragged_batches import RaggedBatch, dense_reference, random_batch

FP32_TOLERANCE = 1e-5
# bf16 inputs round to 2^-9 relative, the probabilities are rounded to bf16 before P @ V, and the
# output is rounded to bf16 once more: a few 2^-8 of the output's scale.
BF16_ATOL = 3e-2
BF16_RTOL = 2e-2

_STATIC = ("sm_scale", "sliding_window", "chunk_size", "soft_cap", "block_sizes")
KERNELS = {
    "pallas": jax.jit(
        functools.partial(pallas_kernel.ragged_paged_attention, interpret=True),
        static_argnames=_STATIC,
    ),
    "triton": jax.jit(
        functools.partial(triton_kernel.ragged_paged_attention, interpret=True),
        static_argnames=_STATIC,
    ),
    "cpu": jax.jit(cpu_kernel.ragged_paged_attention, static_argnames=_STATIC[:4]),
}
_xla = jax.jit(xla_kernel.ragged_paged_attention, static_argnames=_STATIC[:4])

# (page_size, pages_per_seq, head_dim, num_q_heads, num_kv_heads): page sizes 16 and 64,
# head_dim 64 and 128, GQA ratios 4, 1 (MHA) and 8 (MQA).
LAYOUTS = {
    "ps16-d64-gqa4": (16, 3, 64, 8, 2),
    "ps64-d128-mha": (64, 2, 128, 2, 2),
    "ps16-d128-mqa8": (16, 3, 128, 8, 1),
}
# (sm_scale, sliding_window, soft_cap)
OPTIONS = {
    "full": (0.125, None, None),
    "window20": (0.3, 20, None),
    "window7-softcap": (0.25, 7, 4.0),
    "softcap": (0.5, None, 2.0),
}


def _batch(rng, layout: str, *, release_before: int | None = None, **kwargs) -> RaggedBatch:
    page_size, pages_per_seq, head_dim, num_q_heads, num_kv_heads = LAYOUTS[layout]
    options = {"num_tokens": 16, "max_num_seqs": 4, **kwargs}
    return random_batch(
        rng,
        pages_per_seq=pages_per_seq,
        page_size=page_size,
        num_q_heads=num_q_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        release_before=release_before,
        **options,
    )


def _run(kernel, batch: RaggedBatch, dtype=jnp.float32, **static) -> np.ndarray:
    queries, kv_pages, *meta = batch.inputs()
    out = kernel(
        jnp.asarray(queries, dtype), jnp.asarray(kv_pages, dtype), *map(jnp.asarray, meta), **static
    )
    assert out.dtype == dtype
    return np.asarray(out.astype(jnp.float32))[: batch.num_real_tokens]


def _reference(batch: RaggedBatch, **static) -> np.ndarray:
    out = ref_ragged_paged_attention(*map(jnp.asarray, batch.inputs()), **static)
    return np.asarray(out)[: batch.num_real_tokens]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fp32_matches_jax_reference_on_random_ragged_batches(rng, kernel, layout, option):
    sm_scale, window, soft_cap = OPTIONS[option]
    static = {"sm_scale": sm_scale, "sliding_window": window, "soft_cap": soft_cap}
    batch = _batch(rng, layout, release_before=window)
    np.testing.assert_allclose(
        _run(KERNELS[kernel], batch, **static), _reference(batch, **static), atol=FP32_TOLERANCE
    )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("layout", ["ps16-d64-gqa4", "ps64-d128-mha"])
def test_fp32_matches_xla_backend_with_window_and_soft_cap(rng, kernel, layout):
    static = {"sm_scale": 0.2, "sliding_window": 24, "soft_cap": 3.0}
    batch = _batch(rng, layout, release_before=24)
    expected = np.asarray(_xla(*map(jnp.asarray, batch.inputs()), **static))
    np.testing.assert_allclose(
        _run(KERNELS[kernel], batch, **static),
        expected[: batch.num_real_tokens],
        atol=FP32_TOLERANCE,
    )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("layout", "chunk_size"), [("ps16-d64-gqa4", 16), ("ps64-d128-mha", 40)])
def test_chunked_attention_matches_xla_and_dense_reference(rng, kernel, layout, chunk_size):
    static = {"sm_scale": 0.125, "chunk_size": chunk_size}
    batch = _batch(rng, layout, release_before=chunk_size)
    out = _run(KERNELS[kernel], batch, **static)
    xla = np.asarray(_xla(*map(jnp.asarray, batch.inputs()), **static))
    np.testing.assert_allclose(out, xla[: batch.num_real_tokens], atol=FP32_TOLERANCE)
    np.testing.assert_allclose(out, dense_reference(batch, **static), atol=FP32_TOLERANCE)


@pytest.mark.parametrize("kernel", KERNELS)
def test_bfloat16_matches_float32_reference_within_tolerance(rng, kernel):
    static = {"sm_scale": 0.125, "sliding_window": None, "soft_cap": None}
    batch = _batch(rng, "ps16-d64-gqa4")
    rounded = RaggedBatch(
        queries=np.asarray(jnp.asarray(batch.queries, jnp.bfloat16).astype(jnp.float32)),
        kv_pages=np.asarray(jnp.asarray(batch.kv_pages, jnp.bfloat16).astype(jnp.float32)),
        kv_lens=batch.kv_lens,
        page_indices=batch.page_indices,
        cu_q_lens=batch.cu_q_lens,
        num_seqs=batch.num_seqs,
    )
    np.testing.assert_allclose(
        _run(KERNELS[kernel], batch, jnp.bfloat16, **static),
        _reference(rounded, **static),
        atol=BF16_ATOL,
        rtol=BF16_RTOL,
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_nan_in_null_page_never_reaches_the_output(rng, kernel):
    static = {"sm_scale": 0.125, "sliding_window": 20, "soft_cap": None}
    batch = _batch(rng, "ps16-d64-gqa4", release_before=20, null_page_fill=np.nan)
    out = _run(KERNELS[kernel], batch, **static)
    assert np.isfinite(out).all()
    clean = RaggedBatch(
        queries=batch.queries,
        kv_pages=np.nan_to_num(batch.kv_pages, nan=50.0),
        kv_lens=batch.kv_lens,
        page_indices=batch.page_indices,
        cu_q_lens=batch.cu_q_lens,
        num_seqs=batch.num_seqs,
    )
    np.testing.assert_allclose(out, _reference(clean, **static), atol=FP32_TOLERANCE)


def test_triton_decode_path_serves_a_batch_of_single_token_sequences(rng):
    # 32 tokens over 4 sequence rows pick a prefill block of 4 tokens; a batch where every
    # sequence brings one token takes the decode path (one program per sequence) instead.
    static = {"sm_scale": 0.125, "sliding_window": None, "soft_cap": None}
    batch = _batch(rng, "ps16-d64-gqa4", num_tokens=32, max_num_seqs=4)
    num_seqs = int(batch.num_seqs[0])
    decode = RaggedBatch(
        queries=batch.queries,
        kv_pages=batch.kv_pages,
        kv_lens=batch.kv_lens,
        page_indices=batch.page_indices,
        cu_q_lens=np.minimum(np.arange(5, dtype=np.int32), num_seqs),
        num_seqs=batch.num_seqs,
    )
    np.testing.assert_allclose(
        _run(KERNELS["triton"], decode, **static),
        _reference(decode, **static),
        atol=FP32_TOLERANCE,
    )


@pytest.mark.parametrize(
    ("kernel", "block_sizes"),
    [
        ("pallas", pallas_kernel.BlockSizes(query_block=1, kv_pages_per_step=1)),
        ("pallas", pallas_kernel.BlockSizes(query_block=8, kv_pages_per_step=2)),
        ("triton", triton_kernel.BlockSizes(query_block=8, key_tile=16)),
    ],
)
def test_block_sizes_change_speed_not_results(rng, kernel, block_sizes):
    static = {"sm_scale": 0.125, "sliding_window": None, "soft_cap": None}
    batch = _batch(rng, "ps16-d64-gqa4")
    np.testing.assert_allclose(
        _run(KERNELS[kernel], batch, block_sizes=block_sizes, **static),
        _reference(batch, **static),
        atol=FP32_TOLERANCE,
    )
