"""Ragged paged attention as a Pallas TPU (Mosaic) kernel, runnable in TPU interpret mode on CPU.

Contract A (``docs/attention.md``): packed ragged queries attend causally to a paged KV cache,
with optional sliding window, chunked local attention and logit soft cap, and GQA.

Layout of the work:

* Outside the kernel (cheap jnp gathers) the ragged tokens are cut into *query blocks* of
  ``query_block`` tokens of one sequence (``query_blocks.py``) and laid out as
  ``[num_blocks, num_kv_heads, query_block * group, head_dim]``: every kv head's query rows
  are one dense matrix, so GQA is one matrix product per kv head.
* The grid has one program per query block. Per-block scalars (sequence, first position,
  live rows, context length) and the flattened page table are *scalar-prefetched* into SMEM.
* The KV cache stays in HBM (``memory_space=ANY``). A program visits only the pages its rows
  can see (from the first page a window / chunk leaves visible to the page of its last row),
  ``kv_pages_per_step`` pages at a time, copying them into a double-buffered VMEM scratch
  with async DMAs (the next step's copy overlaps this step's compute) and keeping an online
  softmax in fp32.
* Keys past the context, before the window / chunk, or on the null page are masked, and
  their V is zeroed, so garbage in released pages can never produce NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from esurge_attention_pallas.block_sizes import BlockSizes, choose_block_sizes
from esurge_core.attention.input_validation import validate_inputs
from esurge_core.attention.query_blocks import (
    from_block_layout,
    plan_query_blocks,
    to_block_layout,
)

__all__ = ["BlockSizes", "ragged_paged_attention"]

# Finite stand-in for -inf: a masked logit never wins a row maximum, and a row that sees
# nothing stays finite (its output is 0).
_MASKED_LOGIT = -0.7 * float(jnp.finfo(jnp.float32).max)


def _visible_key_range(
    first_pos: jax.Array,
    live_rows: jax.Array,
    kv_len: jax.Array,
    *,
    page_size: int,
    sliding_window: int | None,
    chunk_size: int | None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """First visible key, first page slot and end page slot (exclusive) of one query block."""
    first_key = jnp.int32(0)
    if sliding_window is not None:
        first_key = jnp.maximum(first_key, first_pos - sliding_window + 1)
    if chunk_size is not None:
        first_key = jnp.maximum(first_key, (first_pos // chunk_size) * chunk_size)
    last_key = jnp.minimum(first_pos + live_rows - 1, kv_len - 1)
    start_page = first_key // page_size
    end_page = jnp.where(live_rows > 0, last_key // page_size + 1, start_page)
    return first_key, start_page, jnp.maximum(end_page, start_page)


def _attention_kernel(
    # Scalar prefetch (SMEM).
    seq_ref,
    first_pos_ref,
    live_rows_ref,
    kv_len_ref,
    page_table_ref,  # int32[max_num_seqs * pages_per_seq], flattened
    # Inputs.
    q_ref,  # VMEM [1, Hkv, rows, D]
    kv_hbm_ref,  # HBM [num_pages, page_size, 2 * Hkv, D]
    # Output.
    o_ref,  # VMEM [1, Hkv, rows, D]
    # Scratch.
    kv_buf,  # VMEM [2, pages_per_step, page_size, 2 * Hkv, D]
    sems,  # DMA semaphores [2]
    *,
    group: int,
    pages_per_seq: int,
    sm_scale: float,
    sliding_window: int | None,
    chunk_size: int | None,
    soft_cap: float | None,
):
    """One query block against every page it can see (online softmax over key steps)."""
    _, pages_per_step, page_size, combined_heads, head_dim = kv_buf.shape
    num_kv_heads = combined_heads // 2
    rows = q_ref.shape[2]
    step_keys = pages_per_step * page_size

    b = pl.program_id(0)
    seq = seq_ref[b]
    first_pos = first_pos_ref[b]
    live_rows = live_rows_ref[b]
    kv_len = kv_len_ref[b]
    first_key, start_page, end_page = _visible_key_range(
        first_pos,
        live_rows,
        kv_len,
        page_size=page_size,
        sliding_window=sliding_window,
        chunk_size=chunk_size,
    )
    num_steps = (end_page - start_page + pages_per_step - 1) // pages_per_step
    # Page slots past end_page are read from the null page: their keys must count as outside
    # the context even where they are below kv_len.
    key_end = jnp.minimum(kv_len, end_page * page_size)

    def copies(step, slot):
        """DMA descriptors of one step's pages (slots past the visible range read page 0)."""
        descriptors = []
        for j in range(pages_per_step):
            slot_in_table = start_page + step * pages_per_step + j
            in_range = slot_in_table < end_page
            index = seq * pages_per_seq + jnp.minimum(slot_in_table, pages_per_seq - 1)
            page = jnp.where(in_range, page_table_ref[index], 0)
            descriptors.append(
                pltpu.make_async_copy(kv_hbm_ref.at[page], kv_buf.at[slot, j], sems.at[slot])
            )
        return descriptors

    @pl.when(num_steps > 0)
    def _prefetch_first_step():
        for copy in copies(0, 0):
            copy.start()

    token = lax.broadcasted_iota(jnp.int32, (rows, 1), 0) // group
    q_pos = first_pos + token  # [rows, 1]
    row_live = token < live_rows
    key_offsets = lax.broadcasted_iota(jnp.int32, (1, step_keys), 1)
    queries = [q_ref[0, h] for h in range(num_kv_heads)]
    precision = lax.Precision.HIGHEST if q_ref.dtype == jnp.float32 else None

    def step(i, carry):
        slot = i % 2

        @pl.when(i + 1 < num_steps)
        def _prefetch_next_step():
            for copy in copies(i + 1, 1 - slot):
                copy.start()

        for copy in copies(i, slot):
            copy.wait()

        k_pos = (start_page + i * pages_per_step) * page_size + key_offsets  # [1, keys]
        in_context = (k_pos < key_end) & (k_pos >= first_key)
        visible = row_live & in_context & (k_pos <= q_pos)
        if sliding_window is not None:
            visible &= k_pos > q_pos - sliding_window
        if chunk_size is not None:
            visible &= (k_pos // chunk_size) == (q_pos // chunk_size)
        value_mask = in_context.reshape(step_keys, 1)

        new_carry = []
        for h in range(num_kv_heads):
            row_max, denom, acc = carry[h]
            k = kv_buf[slot, :, :, 2 * h, :].reshape(step_keys, head_dim)
            v = kv_buf[slot, :, :, 2 * h + 1, :].reshape(step_keys, head_dim)
            logits = lax.dot_general(
                queries[h],
                k,
                (((1,), (1,)), ((), ())),
                preferred_element_type=jnp.float32,
                precision=precision,
            )
            logits = logits * sm_scale
            if soft_cap is not None:
                logits = soft_cap * jnp.tanh(logits / soft_cap)
            logits = jnp.where(visible, logits, _MASKED_LOGIT)
            new_max = jnp.maximum(row_max, jnp.max(logits, axis=1, keepdims=True))
            rescale = jnp.exp(row_max - new_max)
            probs = jnp.where(visible, jnp.exp(logits - new_max), 0.0)
            denom = denom * rescale + jnp.sum(probs, axis=1, keepdims=True)
            # 0 * NaN is NaN: values of keys outside the context (null or stale pages) are
            # zeroed, not only given zero weight.
            v = jnp.where(value_mask, v, jnp.zeros_like(v))
            acc = acc * rescale + lax.dot_general(
                probs.astype(v.dtype),
                v,
                (((1,), (0,)), ((), ())),
                preferred_element_type=jnp.float32,
                precision=precision,
            )
            new_carry.append((new_max, denom, acc))
        return tuple(new_carry)

    init = tuple(
        (
            jnp.full((rows, 1), _MASKED_LOGIT, jnp.float32),
            jnp.zeros((rows, 1), jnp.float32),
            jnp.zeros((rows, head_dim), jnp.float32),
        )
        for _ in range(num_kv_heads)
    )
    final = lax.fori_loop(0, num_steps, step, init)
    for h, (_, denom, acc) in enumerate(final):
        o_ref[0, h] = (acc / jnp.where(denom > 0, denom, 1.0)).astype(o_ref.dtype)


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
    """Causal attention of a ragged batch of new tokens over a paged KV cache (Pallas TPU).

    Same arguments and semantics as ``esurge_attention_xla.kernel.ragged_paged_attention``
    (contract A): token ``j`` of sequence ``i`` sits at position
    ``kv_lens[i] - q_len_i + j`` and sees keys ``k <= p``, limited further by
    ``sliding_window`` (``k > p - sliding_window``) or ``chunk_size``
    (``k // chunk_size == p // chunk_size``); ``soft_cap`` caps logits with ``tanh``.

    Args:
        queries: ``[num_tokens, num_q_heads, head_dim]``.
        kv_pages: ``[num_pages, page_size, 2 * num_kv_heads, head_dim]``, K/V interleaved.
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
        interpret: Run in Pallas TPU interpret mode (any backend, e.g. CPU) instead of
            compiling with Mosaic.

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
    _, page_size, combined_heads, _ = kv_pages.shape
    num_kv_heads = combined_heads // 2
    group = num_q_heads // num_kv_heads
    max_num_seqs, pages_per_seq = page_indices.shape
    sizes = block_sizes or choose_block_sizes(
        num_tokens=num_tokens,
        max_num_seqs=max_num_seqs,
        pages_per_seq=pages_per_seq,
        page_size=page_size,
        num_kv_heads=num_kv_heads,
        group=group,
        head_dim=head_dim,
        dtype=jnp.dtype(kv_pages.dtype).name,
    )
    query_block = min(sizes.query_block, num_tokens)
    pages_per_step = min(sizes.kv_pages_per_step, pages_per_seq)

    plan = plan_query_blocks(
        kv_lens.astype(jnp.int32),
        cu_q_lens.astype(jnp.int32),
        num_seqs.astype(jnp.int32),
        num_tokens=num_tokens,
        block=query_block,
    )
    q = to_block_layout(queries.astype(kv_pages.dtype), plan, num_kv_heads)
    rows = q.shape[2]
    q_spec = pl.BlockSpec((1, num_kv_heads, rows, head_dim), lambda b, *_: (b, 0, 0, 0))
    kernel = pl.pallas_call(
        functools.partial(
            _attention_kernel,
            group=group,
            pages_per_seq=pages_per_seq,
            sm_scale=sm_scale,
            sliding_window=sliding_window,
            chunk_size=chunk_size,
            soft_cap=soft_cap,
        ),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=5,
            grid=(plan.num_blocks,),
            in_specs=[q_spec, pl.BlockSpec(memory_space=pl.ANY)],
            out_specs=q_spec,
            scratch_shapes=[
                pltpu.VMEM(
                    (2, pages_per_step, page_size, combined_heads, head_dim), kv_pages.dtype
                ),
                pltpu.SemaphoreType.DMA((2,)),
            ],
        ),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("arbitrary",)),
        out_shape=jax.ShapeDtypeStruct(q.shape, kv_pages.dtype),
        interpret=pltpu.InterpretParams() if interpret else False,
        name="esurge_ragged_paged_attention_tpu",
    )
    out = kernel(
        plan.seq,
        plan.first_pos,
        plan.live_rows,
        plan.kv_len,
        page_indices.astype(jnp.int32).reshape(-1),
        q,
        kv_pages,
    )
    return from_block_layout(out, plan, num_q_heads).astype(queries.dtype)
