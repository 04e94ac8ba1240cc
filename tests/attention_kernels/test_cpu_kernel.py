"""What is particular to the native CPU kernel: its build, its errors and its padding rows.

Its numerical agreement with JAX's reference and the XLA backend is checked with the other
kernels in ``test_kernels_match_references``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu import kernel, native_build

from tests.attention.ragged_batches import RaggedBatch, dense_reference, random_batch


def _batch(rng, **overrides):
    options = {
        "num_tokens": 24,
        "max_num_seqs": 4,
        "pages_per_seq": 4,
        "page_size": 8,
        "num_q_heads": 6,
        "num_kv_heads": 2,
        "head_dim": 32,
    }
    options.update(overrides)
    return random_batch(rng, **options)


def test_padding_token_rows_are_zero(rng):
    batch = _batch(rng)
    out = np.asarray(kernel.ragged_paged_attention(*map(jnp.asarray, batch.inputs())))
    assert batch.num_real_tokens < out.shape[0]
    assert not out[batch.num_real_tokens :].any()


@pytest.mark.parametrize(
    "num_tokens",
    [100, 300],  # a decode-sized step (the library's workers) and a prefill one (XLA's pool)
)
def test_many_sequences_spread_over_the_thread_pool_match_xla(rng, num_tokens):
    from esurge_attention_xla.kernel import ragged_paged_attention as xla

    batch = _batch(rng, num_tokens=num_tokens, max_num_seqs=48, pages_per_seq=8)
    inputs = [jnp.asarray(x) for x in batch.inputs()]
    n = batch.num_real_tokens
    np.testing.assert_allclose(
        np.asarray(kernel.ragged_paged_attention(*inputs, sm_scale=0.2))[:n],
        np.asarray(xla(*inputs, sm_scale=0.2))[:n],
        atol=1e-5,
    )


@pytest.mark.parametrize("kv_dtype", [jnp.float32, jnp.bfloat16])
def test_a_single_decode_sequence_split_by_kv_head_matches_xla(rng, kv_dtype):
    # One sequence of one new token: the kernel gives each kv head its own item.
    from esurge_attention_xla.kernel import ragged_paged_attention as xla

    batch = _batch(
        rng, num_tokens=2, max_num_seqs=2, pages_per_seq=40, num_q_heads=9, num_kv_heads=3
    )
    assert batch.num_real_tokens == 1 and int(batch.num_seqs[0]) == 1
    q, kv, *rest = (jnp.asarray(x) for x in batch.inputs())
    inputs = (q, kv.astype(kv_dtype), *rest)
    np.testing.assert_allclose(
        np.asarray(kernel.ragged_paged_attention(*inputs, sm_scale=0.2))[:1],
        np.asarray(xla(*inputs, sm_scale=0.2))[:1],
        atol=1e-5,
    )


# (new tokens, keys) per sequence. In a step of few sequences a decode token's visible keys are
# attended in equal spans of at least 512 keys, one item each, whose softmax states are merged
# after (here 4 spans of the longest, 2 of 1024 keys); in a larger step (the mix) in one item.
CONTEXTS = {
    "one-long": [(1, 2150)],
    "one-just-two-spans": [(1, 1024)],
    "one-too-short-to-split": [(1, 1000)],
    "two": [(1, 1030), (1, 700)],
    "mix": [(1, 1500), (1, 700), (24, 900), (1, 512), (1, 1024), (1, 100), (3, 1030)],
}


def _long_context_batch(rng, lengths, page_size=16):
    num_q_heads, num_kv_heads, head_dim = 9, 3, 64
    pages_per_seq = -(-max(kv for _, kv in lengths) // page_size)
    max_num_seqs = len(lengths) + 1
    num_pages = 1 + max_num_seqs * pages_per_seq
    pool = rng.permutation(np.arange(1, num_pages)).astype(np.int32)
    page_indices = np.zeros((max_num_seqs, pages_per_seq), np.int32)
    page_indices[: len(lengths)] = pool[: len(lengths) * pages_per_seq].reshape(-1, pages_per_seq)
    q_lens = [q for q, _ in lengths]
    cu_q_lens = np.zeros(max_num_seqs + 1, np.int32)
    cu_q_lens[1 : len(lengths) + 1] = np.cumsum(q_lens)
    cu_q_lens[len(lengths) + 1 :] = cu_q_lens[len(lengths)]
    kv_lens = np.zeros(max_num_seqs, np.int32)
    kv_lens[: len(lengths)] = [kv for _, kv in lengths]
    kv_pages = rng.standard_normal((num_pages, page_size, 2 * num_kv_heads, head_dim))
    kv_pages[0] = 50.0  # the null page: garbage a kernel must never read
    return RaggedBatch(
        queries=rng.standard_normal((sum(q_lens) + 2, num_q_heads, head_dim)).astype(np.float32),
        kv_pages=kv_pages.astype(np.float32),
        kv_lens=kv_lens,
        page_indices=page_indices,
        cu_q_lens=cu_q_lens,
        num_seqs=np.array([len(lengths)], np.int32),
    )


@pytest.mark.parametrize(
    ("contexts", "kv_dtype", "limits"),
    [
        (name, jnp.bfloat16, limits)
        for name in CONTEXTS
        for limits in ({}, {"sliding_window": 1100}, {"chunk_size": 1100})
    ]
    + [("one-long", jnp.float32, {})],
    ids=str,
)
def test_long_decode_contexts_match_the_float64_reference(rng, contexts, kv_dtype, limits):
    batch = _long_context_batch(rng, CONTEXTS[contexts])
    if kv_dtype == jnp.bfloat16:  # the reference sees the values the kernel reads
        batch.kv_pages[:] = np.asarray(jnp.asarray(batch.kv_pages, jnp.bfloat16), np.float32)
    q, kv, *rest = (jnp.asarray(x) for x in batch.inputs())
    out = kernel.ragged_paged_attention(q, kv.astype(kv_dtype), *rest, sm_scale=0.125, **limits)
    expected = dense_reference(batch, sm_scale=0.125, **limits)
    np.testing.assert_allclose(
        np.asarray(out)[: batch.num_real_tokens], expected, atol=2e-5, rtol=1e-4
    )


def test_a_negative_span_length_is_rejected_with_its_value(rng):
    inputs = map(jnp.asarray, _batch(rng).inputs())
    with pytest.raises(ValueError, match=r"decode_span_min_keys must be >= 0 .* got -1"):
        kernel.ragged_paged_attention(*inputs, decode_span_min_keys=-1)


def test_mixed_dtypes_are_rejected_with_both_named(rng):
    queries, kv_pages, *meta = map(jnp.asarray, _batch(rng).inputs())
    with pytest.raises(ValueError, match="got bfloat16 / float32"):
        kernel.ragged_paged_attention(queries.astype(jnp.bfloat16), kv_pages, *meta)


def test_head_dim_beyond_the_kernels_limit_is_rejected(rng):
    queries, kv_pages, *meta = map(jnp.asarray, _batch(rng).inputs())
    wide_q = jnp.zeros((*queries.shape[:2], 512), jnp.float32)
    wide_kv = jnp.zeros((*kv_pages.shape[:3], 512), jnp.float32)
    with pytest.raises(ValueError, match=r"head_dim <= 256 \(got 512\)"):
        kernel.ragged_paged_attention(wide_q, wide_kv, *meta)


def test_library_is_cached_per_machine_and_reused(tmp_path, monkeypatch):
    # A stand-in compiler that logs each call and writes its -o file: the real compiler
    # builds the library every other test here loads (40 s on two cores), once per machine.
    log = tmp_path / "calls.log"
    compiler = tmp_path / "fake-c++"
    compiler.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'while [ "$#" -gt 1 ]; do [ "$1" = -o ] && echo library > "$2"; shift; done\n'
    )
    compiler.chmod(0o755)
    monkeypatch.setenv("ESURGE_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(compiler))
    first = native_build.build_library()
    assert first.parent == tmp_path / "native" and first.read_text() == "library\n"
    assert first == native_build.library_path()
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left
    (call,) = log.read_text().splitlines()
    assert "-march=native" in call.split() and "ragged_paged_attention.cc" in call
    stamp = first.stat().st_mtime_ns
    assert native_build.build_library() == first
    assert first.stat().st_mtime_ns == stamp
    assert len(log.read_text().splitlines()) == 1  # reused: the compiler ran once


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ESURGE_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(native_build.NativeBuildError, match="need a C\\+\\+20 compiler"):
        native_build.build_library()
    assert not list((tmp_path / "native").iterdir())  # no half-written library left behind


def test_float32_queries_over_a_bfloat16_cache_match_xla(rng):
    from esurge_attention_xla.kernel import ragged_paged_attention as xla

    queries, kv_pages, *meta = map(jnp.asarray, _batch(rng).inputs())
    cache = kv_pages.astype(jnp.bfloat16)
    out = kernel.ragged_paged_attention(queries, cache, *meta, sm_scale=0.3, sliding_window=9)
    assert out.dtype == jnp.float32
    n = int(meta[2][int(meta[3][0])])  # cu_q_lens[num_seqs]
    np.testing.assert_allclose(
        np.asarray(out)[:n],
        np.asarray(xla(queries, cache, *meta, sm_scale=0.3, sliding_window=9))[:n],
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("new_dtype", "cache_dtype"),
    [("float32", "float32"), ("float32", "bfloat16"), ("bfloat16", "bfloat16")],
)
def test_native_page_write_equals_the_xla_scatter(rng, new_dtype, cache_dtype):
    import jax

    from esurge_core.attention.kv_write import write_kv_pages as xla_write

    cache = jnp.asarray(rng.standard_normal((5, 4, 4, 8)), cache_dtype)
    keys = jnp.asarray(rng.standard_normal((6, 2, 8)), new_dtype)
    values = jnp.asarray(rng.standard_normal((6, 2, 8)), new_dtype)
    slots = jnp.asarray([3, 17, 0, 19, 8, 99], jnp.int32)  # 99 is outside: skipped
    expected = np.asarray(xla_write(cache, keys, values, slots).astype(jnp.float32))
    written = jax.jit(kernel.write_kv_pages)(cache, keys, values, slots)
    assert written.dtype == cache.dtype
    np.testing.assert_array_equal(np.asarray(written.astype(jnp.float32)), expected)


def test_native_page_write_updates_a_donated_cache_in_place(rng):
    import jax

    cache = jnp.zeros((64, 16, 6, 64), jnp.bfloat16)
    keys = values = jnp.ones((2, 3, 64), jnp.float32)
    pointer = cache.unsafe_buffer_pointer()
    written = jax.jit(kernel.write_kv_pages, donate_argnums=(0,))(
        cache, keys, values, jnp.asarray([5, 40], jnp.int32)
    )
    assert written.unsafe_buffer_pointer() == pointer
    assert float(written[0, 5].astype(jnp.float32).sum()) == 6 * 64


def test_loading_the_kernel_keeps_subnormal_floats_for_the_whole_process():
    # A library linked with -ffast-math would set flush-to-zero / denormals-are-zero globally.
    kernel.register_kernel()
    tiny = np.float32(1.4e-45)  # the smallest float32 subnormal
    assert tiny * np.float32(1.0) != 0
