"""Ragged paged attention as a Pallas kernel lowered through Triton (NVIDIA GPUs).

Contract A (``docs/attention.md``): packed ragged queries attend causally to a paged KV cache,
with optional sliding window, chunked local attention and logit soft cap, and GQA. On CPU the
same kernel runs with ``interpret=True`` (Pallas' generic interpreter), which is how it is
tested here.

Layout of the work:

* Outside the kernel (cheap jnp gathers) the ragged tokens are cut into *query blocks*
  (``query_blocks.py``) and laid out as ``[num_blocks, num_kv_heads, rows, head_dim]`` with
  ``rows = query_block * group`` padded to a power of two ``>= 16`` (Triton's tile rules):
  every kv head's query rows form one matrix, so GQA is one ``tl.dot`` per key tile.
* The grid is ``(num_blocks, num_kv_heads)``. A program reads its block's scalars, then walks
  only the key tiles its rows can see (from the first one a window / chunk leaves visible to
  the one holding its last row), loading each tile straight from its page (``page_indices``
  gives the page, K of head ``h`` is lane ``2h``, V is ``2h + 1``), with an online softmax in
  fp32.
* Two paths: the *decode* path (every sequence has one new token: one program per sequence
  and kv head, ``query_block = 1``) and the *prefill* path (query blocks of several tokens).
  Which one runs is decided on device from the batch (``lax.cond``), so a jitted step serves
  both without recompiling.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from esurge_attention_triton.block_sizes import BlockSizes, choose_block_sizes, padded_rows
from esurge_core.attention.input_validation import validate_inputs
from esurge_core.attention.query_blocks import (
    QueryBlocks,
    from_block_layout,
    plan_query_blocks,
    to_block_layout,
)

__all__ = ["BlockSizes", "ragged_paged_attention"]

# Finite stand-in for -inf: a masked logit never wins a row maximum, and a row that sees
# nothing stays finite (its output is 0).
_MASKED_LOGIT = -0.7 * float(jnp.finfo(jnp.float32).max)


def _attention_kernel(
    seq_ref,  # int32[NB]
    first_pos_ref,  # int32[NB]
    live_rows_ref,  # int32[NB]
    kv_len_ref,  # int32[NB]
    page_table_ref,  # int32[max_num_seqs * pages_per_seq]
    q_ref,  # [1, 1, rows, D]
    kv_ref,  # [num_pages, page_size, 2 * Hkv, D]
    o_ref,  # [1, 1, rows, D]
    *,
    group: int,
    pages_per_seq: int,
    key_tile: int,
    sm_scale: float,
    sliding_window: int | None,
    chunk_size: int | None,
    soft_cap: float | None,
):
    """One query block and one kv head against every key tile it can see."""
    rows, head_dim = q_ref.shape[2:]
    page_size = kv_ref.shape[1]
    b = pl.program_id(0)
    h = pl.program_id(1)
    seq = seq_ref[b]
    first_pos = first_pos_ref[b]
    live_rows = live_rows_ref[b]
    kv_len = kv_len_ref[b]

    first_key = jnp.int32(0)
    if sliding_window is not None:
        first_key = jnp.maximum(first_key, first_pos - sliding_window + 1)
    if chunk_size is not None:
        first_key = jnp.maximum(first_key, (first_pos // chunk_size) * chunk_size)
    last_key = jnp.minimum(first_pos + live_rows - 1, kv_len - 1)
    start_tile = first_key // key_tile
    end_tile = jnp.where(live_rows > 0, last_key // key_tile + 1, start_tile)
    end_tile = jnp.maximum(end_tile, start_tile)

    token = jnp.arange(rows, dtype=jnp.int32) // group
    q_pos = (first_pos + token)[:, None]  # [rows, 1]
    row_live = (token < live_rows)[:, None]
    key_offsets = jnp.arange(key_tile, dtype=jnp.int32)
    q = q_ref[0, 0]
    precision = lax.Precision.HIGHEST if q.dtype == jnp.float32 else None

    def step(t, carry):
        row_max, denom, acc = carry
        first = t * key_tile
        slot = jnp.minimum(first // page_size, pages_per_seq - 1)
        page = page_table_ref[seq * pages_per_seq + slot]
        offset = pl.multiple_of(first % page_size, key_tile)
        k = kv_ref[page, pl.ds(offset, key_tile), 2 * h, :]  # [key_tile, D]
        v = kv_ref[page, pl.ds(offset, key_tile), 2 * h + 1, :]
        k_pos = first + key_offsets  # [key_tile]
        in_context = (k_pos < kv_len) & (k_pos >= first_key)
        visible = row_live & in_context[None, :] & (k_pos[None, :] <= q_pos)
        if sliding_window is not None:
            visible &= k_pos[None, :] > q_pos - sliding_window
        if chunk_size is not None:
            visible &= (k_pos[None, :] // chunk_size) == (q_pos // chunk_size)
        logits = plgpu.dot(q, k, trans_b=True, precision=precision) * sm_scale
        if soft_cap is not None:
            logits = soft_cap * jnp.tanh(logits / soft_cap)
        logits = jnp.where(visible, logits, _MASKED_LOGIT)
        new_max = jnp.maximum(row_max, jnp.max(logits, axis=1))
        rescale = jnp.exp(row_max - new_max)
        probs = jnp.where(visible, jnp.exp(logits - new_max[:, None]), 0.0)
        denom = denom * rescale + jnp.sum(probs, axis=1)
        # 0 * NaN is NaN: values of keys outside the context (null or stale pages) are zeroed,
        # not only given zero weight.
        v = jnp.where(in_context[:, None], v, jnp.zeros_like(v))
        acc = acc * rescale[:, None] + plgpu.dot(probs.astype(v.dtype), v, precision=precision)
        return new_max, denom, acc

    init = (
        jnp.full((rows,), _MASKED_LOGIT, jnp.float32),
        jnp.zeros((rows,), jnp.float32),
        jnp.zeros((rows, head_dim), jnp.float32),
    )
    _, denom, acc = lax.fori_loop(start_tile, end_tile, step, init)
    o_ref[0, 0] = (acc / jnp.where(denom > 0, denom, 1.0)[:, None]).astype(o_ref.dtype)


def _run_blocks(
    queries: jax.Array,
    kv_pages: jax.Array,
    page_indices: jax.Array,
    plan: QueryBlocks,
    *,
    key_tile: int,
    interpret: bool,
    **options,
) -> jax.Array:
    """Run the kernel over every query block of ``plan``; returns ``[num_tokens, Hq, D]``."""
    num_q_heads, head_dim = queries.shape[1:]
    num_kv_heads = kv_pages.shape[2] // 2
    pages_per_seq = page_indices.shape[1]
    q = to_block_layout(queries.astype(kv_pages.dtype), plan, num_kv_heads)
    rows = q.shape[2]
    rows_padded = padded_rows(rows)
    q = jnp.pad(q, ((0, 0), (0, 0), (0, rows_padded - rows), (0, 0)))

    q_spec = pl.BlockSpec((1, 1, rows_padded, head_dim), lambda b, h: (b, h, 0, 0))
    out = pl.pallas_call(
        functools.partial(
            _attention_kernel,
            group=num_q_heads // num_kv_heads,
            pages_per_seq=pages_per_seq,
            key_tile=key_tile,
            **options,
        ),
        grid=(plan.num_blocks, num_kv_heads),
        in_specs=[pl.no_block_spec] * 5 + [q_spec, pl.no_block_spec],
        out_specs=q_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, kv_pages.dtype),
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        interpret=interpret,
        name="esurge_ragged_paged_attention_triton",
    )(
        plan.seq,
        plan.first_pos,
        plan.live_rows,
        plan.kv_len,
        page_indices.astype(jnp.int32).reshape(-1),
        q,
        kv_pages,
    )

    return from_block_layout(out[:, :, :rows], plan, num_q_heads)


def ragged_paged_attention(
    queries: jax.Array,
    kv_pages: jax.Array,
    kv_lens: jax.Array,
    page_indices: jax.Array,
    cu_q_lens: jax.Array,
    num_seqs: jax.Array,
    *,
    sm_scale: float = 1.0,
    sliding_window: int | None = None,
    chunk_size: int | None = None,
    soft_cap: float | None = None,
    block_sizes: BlockSizes | None = None,
    interpret: bool = False,
) -> jax.Array:
    """Causal attention of a ragged batch of new tokens over a paged KV cache (Pallas/Triton).

    Same arguments and semantics as ``esurge_attention_xla.kernel.ragged_paged_attention``
    (contract A): token ``j`` of sequence ``i`` sits at position
    ``kv_lens[i] - q_len_i + j`` and sees keys ``k <= p``, limited further by
    ``sliding_window`` (``k > p - sliding_window``) or ``chunk_size``
    (``k // chunk_size == p // chunk_size``); ``soft_cap`` caps logits with ``tanh``.

    Args:
        queries: ``[num_tokens, num_q_heads, head_dim]``.
        kv_pages: ``[num_pages, page_size, 2 * num_kv_heads, head_dim]``, K/V interleaved;
            ``page_size`` must be a multiple of 16 on GPU.
        kv_lens: ``int32[max_num_seqs]``.
        page_indices: ``int32[max_num_seqs, pages_per_seq]``; 0 is the null page.
        cu_q_lens: ``int32[max_num_seqs + 1]``.
        num_seqs: ``int32[1]``.
        sm_scale: Multiplier of ``q . k`` (static).
        sliding_window: Window length in tokens (static).
        chunk_size: Chunk length of chunked local attention (static).
        soft_cap: Logit soft cap (static).
        block_sizes: Static tiling; ``None`` picks :func:`choose_block_sizes`. Changes speed,
            never results.
        interpret: Run with Pallas' interpreter (any backend, e.g. CPU) instead of Triton.

    Returns:
        ``[num_tokens, num_q_heads, head_dim]`` in the dtype of ``queries``; rows of padding
        tokens hold finite values of no meaning.
    """
    validate_inputs(
        queries,
        kv_pages,
        kv_lens,
        page_indices,
        cu_q_lens,
        num_seqs,
        sliding_window=sliding_window,
        chunk_size=chunk_size,
        soft_cap=soft_cap,
    )
    num_tokens, num_q_heads, head_dim = queries.shape
    page_size = kv_pages.shape[1]
    num_kv_heads = kv_pages.shape[2] // 2
    max_num_seqs = page_indices.shape[0]
    sizes = block_sizes or choose_block_sizes(
        num_tokens=num_tokens,
        max_num_seqs=max_num_seqs,
        page_size=page_size,
        group=num_q_heads // num_kv_heads,
        head_dim=head_dim,
    )
    if page_size % sizes.key_tile:
        raise ValueError(
            f"key_tile ({sizes.key_tile}) must divide page_size ({page_size}); use a power of "
            "two that divides the page size"
        )
    query_block = min(sizes.query_block, num_tokens)
    kv_lens = kv_lens.astype(jnp.int32)
    cu_q_lens = cu_q_lens.astype(jnp.int32)
    num_seqs = num_seqs.astype(jnp.int32)
    run = functools.partial(
        _run_blocks,
        queries,
        kv_pages,
        page_indices,
        key_tile=sizes.key_tile,
        interpret=interpret,
        sm_scale=sm_scale,
        sliding_window=sliding_window,
        chunk_size=chunk_size,
        soft_cap=soft_cap,
    )

    def prefill() -> jax.Array:
        return run(
            plan_query_blocks(
                kv_lens, cu_q_lens, num_seqs, num_tokens=num_tokens, block=query_block
            )
        )

    def decode() -> jax.Array:
        # One token per sequence: block b is sequence b, so no search over blocks is needed.
        return run(
            plan_query_blocks(
                kv_lens,
                cu_q_lens,
                num_seqs,
                num_tokens=num_tokens,
                block=1,
                num_blocks=max_num_seqs,
            )
        )

    prefill_blocks = -(-num_tokens // query_block) + min(max_num_seqs, num_tokens)
    if query_block == 1 and min(num_tokens, prefill_blocks) <= max_num_seqs:
        # The prefill plan is already one token per program and no larger than decode's.
        return prefill().astype(queries.dtype)
    real = jnp.arange(max_num_seqs) < num_seqs[0]
    q_lens = jnp.where(real, cu_q_lens[1:] - cu_q_lens[:-1], 0)
    out = lax.cond(jnp.max(q_lens) <= 1, decode, prefill)
    return out.astype(queries.dtype)
