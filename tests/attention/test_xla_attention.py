"""Specification of the XLA ragged paged attention kernel (contract A).

Every case draws fresh random batches. The oracle is JAX's own
``ref_ragged_paged_attention`` (full and sliding-window attention, soft cap) and a float64
dense reference for chunked attention. Jitted kernels are shared across cases with the same
static configuration so compile time stays small on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_xla.kernel import CAPABILITIES, ragged_paged_attention
from jax.experimental.pallas.ops.tpu.ragged_paged_attention import ref_ragged_paged_attention

from tests.attention.ragged_batches import RaggedBatch, dense_reference, random_batch

FP32_TOLERANCE = 1e-5
# bf16 output rounding alone is 2^-9 relative; bf16 products of large blocks add about as much.
BF16_ATOL = 3e-2
BF16_RTOL = 2e-2

_STATIC = ("sm_scale", "sliding_window", "chunk_size", "soft_cap", "query_block", "kv_step_pages")
_attention = jax.jit(ragged_paged_attention, static_argnames=_STATIC)


def _reference(batch: RaggedBatch, **static) -> np.ndarray:
    """JAX's reference kernel, run eagerly (it loops over the real sequences in Python)."""
    return np.asarray(ref_ragged_paged_attention(*map(jnp.asarray, batch.inputs()), **static))


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator per test: every run sees new batches."""
    seed = np.random.SeedSequence().entropy
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)


def _run(batch: RaggedBatch, dtype=jnp.float32, **static) -> np.ndarray:
    queries, kv_pages, *meta = batch.inputs()
    out = _attention(
        jnp.asarray(queries, dtype), jnp.asarray(kv_pages, dtype), *map(jnp.asarray, meta), **static
    )
    assert out.dtype == dtype
    return np.asarray(out.astype(jnp.float32))


# (page_size, pages_per_seq, head_dim, num_q_heads, num_kv_heads, query_block, kv_step_pages)
# Covers page sizes 1/4/16, head_dim 64/128, GQA ratios 1/4/8 (8 is also MQA), automatic and
# forced block sizes, and key loops of one and of several steps.
LAYOUTS = {
    "ps1-d64-mha-loop": (1, 24, 64, 4, 4, None, 5),
    "ps4-d64-gqa4": (4, 6, 64, 8, 2, None, None),
    "ps4-d128-mqa8-block4-loop": (4, 6, 128, 8, 1, 4, 2),
    "ps16-d128-gqa4-block8-loop": (16, 2, 128, 8, 2, 8, 1),
    "ps16-d64-mqa8-block1": (16, 2, 64, 8, 1, 1, None),
}

# (sm_scale, sliding_window, soft_cap)
OPTIONS = {
    "full": (0.125, None, None),
    "window5": (0.3, 5, None),
    "window16-softcap": (0.25, 16, 4.0),
    "softcap": (0.5, None, 2.0),
}


def _layout_batch(rng, layout: str, sliding_window: int | None) -> tuple[RaggedBatch, dict]:
    """A random batch of 32 tokens / 8 sequence rows in the named layout, and its tuning knobs."""
    page_size, pages_per_seq, head_dim, num_q_heads, num_kv_heads, block, step = LAYOUTS[layout]
    batch = random_batch(
        rng,
        num_tokens=32,
        max_num_seqs=8,
        pages_per_seq=pages_per_seq,
        page_size=page_size,
        num_q_heads=num_q_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        release_before=sliding_window,
    )
    return batch, {"query_block": block, "kv_step_pages": step}


def _options(name: str) -> dict:
    sm_scale, sliding_window, soft_cap = OPTIONS[name]
    return {"sm_scale": sm_scale, "sliding_window": sliding_window, "soft_cap": soft_cap}


# JAX's reference runs eagerly and compiles every op anew for each sequence's shapes (about
# 2-3 s a batch on CPU), so it checks each layout once; the float64 dense reference, which it
# also vouches for below, covers the full layout x option sweep.
@pytest.mark.parametrize(
    ("layout", "option"),
    [
        ("ps1-d64-mha-loop", "window16-softcap"),
        ("ps4-d64-gqa4", "window5"),
        ("ps4-d128-mqa8-block4-loop", "softcap"),
        ("ps16-d128-gqa4-block8-loop", "window5"),
        ("ps16-d64-mqa8-block1", "full"),
    ],
)
def test_matches_jax_reference_on_random_ragged_batches(rng, layout, option):
    static = _options(option)
    batch, knobs = _layout_batch(rng, layout, static["sliding_window"])
    out = _run(batch, **knobs, **static)
    expected = _reference(batch, **static)
    n = batch.num_real_tokens
    np.testing.assert_allclose(out[:n], expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)
    np.testing.assert_allclose(
        dense_reference(batch, **static), expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE
    )


@pytest.mark.parametrize("option", ["full", "window16-softcap"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_matches_dense_reference_for_every_layout(rng, layout, option):
    static = _options(option)
    for _ in range(2):
        batch, knobs = _layout_batch(rng, layout, static["sliding_window"])
        out = _run(batch, **knobs, **static)
        expected = dense_reference(batch, **static)
        n = batch.num_real_tokens
        np.testing.assert_allclose(out[:n], expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


@pytest.mark.parametrize(
    ("chunk_size", "sliding_window", "block", "step"),
    [
        pytest.param(4, None, None, None, id="chunk4"),
        pytest.param(8, None, 4, 1, id="chunk8-block4-loop"),
        pytest.param(8, 6, 2, None, id="chunk8-and-window6"),
    ],
)
def test_chunked_attention_matches_dense_masked_reference(
    rng, chunk_size, sliding_window, block, step
):
    limit = min(v for v in (chunk_size, sliding_window) if v is not None)
    for _ in range(2):
        batch = random_batch(
            rng,
            num_tokens=32,
            max_num_seqs=8,
            pages_per_seq=8,
            page_size=4,
            num_q_heads=4,
            num_kv_heads=2,
            head_dim=64,
            release_before=limit,
        )
        static = {"sm_scale": 0.2, "sliding_window": sliding_window, "soft_cap": None}
        out = _run(batch, chunk_size=chunk_size, query_block=block, kv_step_pages=step, **static)
        expected = dense_reference(batch, chunk_size=chunk_size, **static)
        n = batch.num_real_tokens
        np.testing.assert_allclose(out[:n], expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


@pytest.mark.parametrize(
    "block",
    [pytest.param(1, id="block1-fp32-products"), pytest.param(16, id="block16-bf16-products")],
)
def test_bfloat16_matches_float32_reference_within_tolerance(rng, block):
    batch = random_batch(
        rng,
        num_tokens=32,
        max_num_seqs=4,
        pages_per_seq=6,
        page_size=4,
        num_q_heads=8,
        num_kv_heads=2,
        head_dim=64,
        release_before=16,
    )
    # The reference sees the same bf16-rounded inputs, computed in float64.
    rounded = RaggedBatch(
        *(
            np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)) if x.dtype.kind == "f"
            else x
            for x in batch.inputs()
        )
    )  # fmt: skip
    static = {"sm_scale": 0.125, "sliding_window": 16, "soft_cap": 30.0}
    out = _run(rounded, dtype=jnp.bfloat16, query_block=block, **static)
    expected = dense_reference(rounded, **static)
    n = batch.num_real_tokens
    np.testing.assert_allclose(out[:n], expected, atol=BF16_ATOL, rtol=BF16_RTOL)


def test_garbage_in_null_page_and_padding_rows_never_yields_nan(rng):
    batch = random_batch(
        rng,
        num_tokens=32,
        max_num_seqs=8,
        pages_per_seq=6,
        page_size=4,
        num_q_heads=4,
        num_kv_heads=2,
        head_dim=64,
        release_before=8,
    )
    poisoned = batch.kv_pages.copy()
    poisoned[0, ::2] = np.nan
    poisoned[0, 1::2] = np.inf
    dirty = RaggedBatch(
        batch.queries, poisoned, batch.kv_lens, batch.page_indices, batch.cu_q_lens, batch.num_seqs
    )
    static = {"sm_scale": 0.125, "sliding_window": 8, "soft_cap": None}
    out = _run(dirty, query_block=2, **static)
    assert np.isfinite(out).all()
    n = batch.num_real_tokens
    np.testing.assert_allclose(out[:n], _run(batch, query_block=2, **static)[:n], atol=1e-6)


def test_tuning_knobs_change_speed_not_results(rng):
    batch = random_batch(
        rng,
        num_tokens=32,
        max_num_seqs=8,
        pages_per_seq=6,
        page_size=4,
        num_q_heads=8,
        num_kv_heads=2,
        head_dim=64,
    )
    static = {"sm_scale": 0.125, "sliding_window": None, "soft_cap": None}
    baseline = _run(batch, query_block=None, kv_step_pages=None, **static)
    n = batch.num_real_tokens
    for block, step in [(1, 1), (32, 3)]:
        out = _run(batch, query_block=block, kv_step_pages=step, **static)
        np.testing.assert_allclose(out[:n], baseline[:n], atol=FP32_TOLERANCE)


def test_jit_compiles_once_per_bucket_for_new_batch_contents(rng):
    traces = []

    def counted(*args):
        traces.append(1)
        return ragged_paged_attention(*args, sm_scale=0.125, sliding_window=5)

    step = jax.jit(counted)
    for _ in range(3):
        batch = random_batch(
            rng,
            num_tokens=16,
            max_num_seqs=4,
            pages_per_seq=4,
            page_size=4,
            num_q_heads=2,
            num_kv_heads=1,
            head_dim=64,
        )
        out = step(*map(jnp.asarray, batch.inputs()))
        assert np.isfinite(np.asarray(out)).all()
    assert len(traces) == 1


def test_capabilities_declare_dtypes_patterns_and_soft_cap():
    assert CAPABILITIES.dtypes == ("float32", "bfloat16")
    assert CAPABILITIES.patterns == ("full", "sliding_window", "chunked")
    assert CAPABILITIES.soft_cap is True
    assert CAPABILITIES.head_dims is None
    assert CAPABILITIES.page_sizes is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"sliding_window": 0}, "sliding_window", id="window"),
        pytest.param({"chunk_size": -4}, "chunk_size", id="chunk"),
        pytest.param({"soft_cap": 0.0}, "soft_cap", id="soft-cap"),
    ],
)
def test_invalid_static_options_raise_naming_the_option(kwargs, message):
    queries = jnp.zeros((4, 2, 8), jnp.float32)
    kv_pages = jnp.zeros((3, 2, 2, 8), jnp.float32)
    meta = (
        jnp.zeros((2,), jnp.int32),
        jnp.zeros((2, 2), jnp.int32),
        jnp.zeros((3,), jnp.int32),
        jnp.ones((1,), jnp.int32),
    )
    with pytest.raises(ValueError, match=message):
        ragged_paged_attention(queries, kv_pages, *meta, **kwargs)


def test_query_heads_not_a_multiple_of_kv_heads_is_rejected():
    queries = jnp.zeros((4, 3, 8), jnp.float32)
    kv_pages = jnp.zeros((3, 2, 4, 8), jnp.float32)
    meta = (
        jnp.zeros((2,), jnp.int32),
        jnp.zeros((2, 2), jnp.int32),
        jnp.zeros((3,), jnp.int32),
        jnp.ones((1,), jnp.int32),
    )
    with pytest.raises(ValueError, match=r"num_q_heads \(3\) must be a multiple"):
        ragged_paged_attention(queries, kv_pages, *meta)
