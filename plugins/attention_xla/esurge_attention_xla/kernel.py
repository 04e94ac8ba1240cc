"""Ragged paged attention in pure ``jax.numpy``: the reference kernel and the CPU production path.

Implements contract A of the kernel interface (see ``docs/attention.md``): a ragged batch of
packed query tokens, some sequences in prefill and some in decode, attends causally to a paged
KV cache. Every shape is static, so the function is ``jax.jit``-able with ``sm_scale``,
``sliding_window``, ``chunk_size`` and ``soft_cap`` as static arguments.

How the work is laid out (the reasons are measured in ``docs/attention.md``): tokens are grouped
into *query blocks* of ``block`` consecutive tokens of one sequence. A sequence with ``q_len``
new tokens owns ``ceil(q_len / block)`` blocks, so a batch never needs more than
``ceil(num_tokens / block) + min(max_num_seqs, num_tokens)`` blocks (a static bound). A loop
with a dynamic trip count then walks every block's visible pages a few at a time, keeping an
online (flash-attention style) softmax in fp32, and the result is gathered back to token
order. Decode-heavy batches use ``block = 1`` (no padding waste); prefill-heavy batches use
larger blocks so a long prompt gathers its K/V once per block instead of once per token. The
loop stops at the furthest page any block needs and starts each block at its first visible
page, so short contexts in a long bucket, and sliding-window / chunked layers, cost what they
see, not the bucket's context length.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax import lax

from esurge_core.attention.kv_write import write_kv_pages

__all__ = [
    "CAPABILITIES",
    "KernelCapabilities",
    "choose_kv_step_pages",
    "choose_query_block",
    "ragged_paged_attention",
    "write_kv_pages",
]

# Finite stand-in for -inf: a masked logit never wins the row maximum, and a row with nothing
# visible stays finite (its probabilities are zeroed explicitly below).
_MASKED_LOGIT = -0.7 * float(jnp.finfo(jnp.float32).max)
_MAX_QUERY_BLOCK = 32
_STEP_BYTES = 6 * 1024 * 1024
_LOW_PRECISION_MIN_ROWS = 64


@dataclass(frozen=True, slots=True)
class KernelCapabilities:
    """What this kernel supports, as data the plugin registration can declare.

    Attributes:
        dtypes: Query / KV-cache dtypes (by name) the kernel computes correctly.
        head_dims: Supported head dimensions; ``None`` means any.
        page_sizes: Supported page sizes; ``None`` means any.
        patterns: Attention patterns (KV-cache group kinds) the kernel implements.
        soft_cap: Whether logit soft-capping is supported.
        platforms: JAX platforms the kernel runs on.
    """

    dtypes: tuple[str, ...]
    head_dims: tuple[int, ...] | None
    page_sizes: tuple[int, ...] | None
    patterns: tuple[str, ...]
    soft_cap: bool
    platforms: tuple[str, ...]


CAPABILITIES = KernelCapabilities(
    dtypes=("float32", "bfloat16"),
    head_dims=None,
    page_sizes=None,
    patterns=("full", "sliding_window", "chunked"),
    soft_cap=True,
    platforms=("cpu", "gpu", "tpu"),
)
"""Capabilities of :func:`ragged_paged_attention` (any head_dim, any page size)."""


def choose_query_block(num_tokens: int, max_num_seqs: int) -> int:
    """Pick the static query-block size for a batch bucket.

    A block holds consecutive tokens of one sequence. Small blocks waste nothing on padding but
    gather a sequence's K/V once per block; large blocks gather rarely but a sequence's last,
    partly filled block computes padding rows. ``num_tokens / max_num_seqs`` is the average
    query length the bucket allows; half of it, rounded down to a power of two and capped at
    32, measured best on CPU (``docs/attention.md``): ``1`` for decode buckets, 16-32 for
    prefill buckets with few sequences.

    Args:
        num_tokens: Padded number of query tokens (static).
        max_num_seqs: Padded number of sequences (static).

    Returns:
        The block size, a power of two in ``[1, 32]``.
    """
    if num_tokens < 1 or max_num_seqs < 1:
        raise ValueError(
            f"num_tokens ({num_tokens}) and max_num_seqs ({max_num_seqs}) must both be >= 1"
        )
    ratio = max(1, num_tokens // (2 * max_num_seqs))
    return min(1 << (ratio.bit_length() - 1), _MAX_QUERY_BLOCK)


def choose_kv_step_pages(
    num_blocks: int, page_size: int, bytes_per_key: int, rows_per_block: int
) -> int:
    """Pick how many pages per query block one step of the key loop gathers.

    Each step gathers ``num_blocks * step_pages * page_size`` keys (K and V) and builds fp32
    logits for them. Keeping those temporaries near 6 MiB keeps them reused across steps and
    mostly in cache; much larger steps are slower on CPU even though there are fewer of them
    (a fresh large buffer is paid for in page faults), much smaller ones pay per-step overhead
    (measured in ``docs/attention.md``).

    Args:
        num_blocks: Static number of query blocks.
        page_size: Tokens per page.
        bytes_per_key: Bytes of K and V of one token (``2 * num_kv_heads * head_dim * itemsize``).
        rows_per_block: Query heads times block size (logit rows per key and block).

    Returns:
        Pages per step, at least 1.
    """
    per_page = max(1, num_blocks * page_size * (bytes_per_key + 4 * rows_per_block))
    return max(1, _STEP_BYTES // per_page)


def _gather_pages(kv_pages: jax.Array, pages: jax.Array) -> jax.Array:
    """``kv_pages[pages]``, moving 16-bit elements in 32-bit pairs.

    XLA's CPU gather copies 2-byte elements far slower than 4-byte ones, so a 16-bit cache
    with an even head_dim is viewed as uint32 pairs for the copy (a free bitcast both ways).
    """
    head_dim = kv_pages.shape[-1]
    if kv_pages.dtype.itemsize != 2 or head_dim % 2:
        return kv_pages[pages]
    words = lax.bitcast_convert_type(
        kv_pages.reshape(*kv_pages.shape[:-1], head_dim // 2, 2), jnp.uint32
    )
    gathered = lax.bitcast_convert_type(words[pages], kv_pages.dtype)
    return gathered.reshape(*gathered.shape[:-2], head_dim)


def _validate(
    queries: jax.Array,
    kv_pages: jax.Array,
    kv_lens: jax.Array,
    page_indices: jax.Array,
    cu_q_lens: jax.Array,
    num_seqs: jax.Array,
    sliding_window: int | None,
    chunk_size: int | None,
    soft_cap: float | None,
    query_block: int | None,
    kv_step_pages: int | None,
) -> None:
    """Check static shapes and static options; raise ``ValueError`` naming the bad value."""
    if queries.ndim != 3:
        raise ValueError(
            f"queries must be [num_tokens, num_q_heads, head_dim], got shape {queries.shape}"
        )
    if kv_pages.ndim != 4 or kv_pages.shape[2] % 2:
        raise ValueError(
            "kv_pages must be [num_pages, page_size, 2 * num_kv_heads, head_dim] with K and V "
            f"interleaved, got shape {kv_pages.shape}"
        )
    num_q_heads, head_dim = queries.shape[1:]
    num_kv_heads = kv_pages.shape[2] // 2
    if kv_pages.shape[3] != head_dim:
        raise ValueError(
            f"head_dim of queries ({head_dim}) and kv_pages ({kv_pages.shape[3]}) must match"
        )
    if num_q_heads % num_kv_heads:
        raise ValueError(
            f"num_q_heads ({num_q_heads}) must be a multiple of num_kv_heads ({num_kv_heads})"
        )
    if page_indices.ndim != 2:
        raise ValueError(
            f"page_indices must be [max_num_seqs, pages_per_seq], got shape {page_indices.shape}"
        )
    max_num_seqs = page_indices.shape[0]
    if kv_lens.shape != (max_num_seqs,):
        raise ValueError(f"kv_lens must have shape ({max_num_seqs},), got {kv_lens.shape}")
    if cu_q_lens.shape != (max_num_seqs + 1,):
        raise ValueError(f"cu_q_lens must have shape ({max_num_seqs + 1},), got {cu_q_lens.shape}")
    if num_seqs.shape != (1,):
        raise ValueError(f"num_seqs must have shape (1,), got {num_seqs.shape}")
    for name, value in (("sliding_window", sliding_window), ("chunk_size", chunk_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be None or a positive int, got {value!r}")
    if soft_cap is not None and not soft_cap > 0:
        raise ValueError(f"soft_cap must be None or a positive float, got {soft_cap!r}")
    if query_block is not None and (not isinstance(query_block, int) or query_block < 1):
        raise ValueError(f"query_block must be None or a positive int, got {query_block!r}")
    if kv_step_pages is not None and (not isinstance(kv_step_pages, int) or kv_step_pages < 1):
        raise ValueError(f"kv_step_pages must be None or a positive int, got {kv_step_pages!r}")


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
    query_block: int | None = None,
    kv_step_pages: int | None = None,
) -> jax.Array:
    """Causal attention of a ragged batch of new tokens over a paged KV cache.

    The new queries of sequence ``i`` are ``queries[cu_q_lens[i]:cu_q_lens[i + 1]]``; they are
    the last ``q_len`` tokens of its ``kv_lens[i]``-token context, so token ``j`` sits at
    position ``p = kv_lens[i] - q_len + j`` and sees keys ``k <= p`` (further limited by
    ``sliding_window`` or ``chunk_size``). Semantics match
    ``jax.experimental.pallas.ops.tpu.ragged_paged_attention.ref_ragged_paged_attention``.

    Args:
        queries: ``[num_tokens, num_q_heads, head_dim]``, packed tokens, padding at the end.
        kv_pages: ``[num_pages, page_size, 2 * num_kv_heads, head_dim]``; ``[..., 2h, :]`` is
            K of kv head ``h`` and ``[..., 2h + 1, :]`` its V. Already holds this step's K/V.
        kv_lens: ``int32[max_num_seqs]`` context length of each sequence, new tokens included.
        page_indices: ``int32[max_num_seqs, pages_per_seq]`` page ids of each sequence in
            order; unused or released entries are ``0`` (the null page).
        cu_q_lens: ``int32[max_num_seqs + 1]`` cumulative query lengths.
        num_seqs: ``int32[1]`` number of real sequences; rows ``>= num_seqs`` are ignored.
        sm_scale: Multiplier of ``q . k`` before the soft cap and softmax (static).
        sliding_window: A query at ``p`` sees keys in ``(p - sliding_window, p]`` (static).
        chunk_size: A query at ``p`` sees keys ``k <= p`` with
            ``k // chunk_size == p // chunk_size`` (static; Llama 4 local attention).
        soft_cap: If set, ``logits = soft_cap * tanh(logits / soft_cap)`` (static).
        query_block: Tokens per query block (static); ``None`` picks
            :func:`choose_query_block`. Changes speed, never results.
        kv_step_pages: Pages per block visited in one step of the key loop (static);
            ``None`` picks :func:`choose_kv_step_pages`. Changes speed, never results.

    Returns:
        ``[num_tokens, num_q_heads, head_dim]`` in the dtype of ``queries``. Rows of padding
        tokens hold finite values of no meaning. Scores, softmax and the weighted sum of V
        are computed in fp32.
    """
    _validate(
        queries,
        kv_pages,
        kv_lens,
        page_indices,
        cu_q_lens,
        num_seqs,
        sliding_window,
        chunk_size,
        soft_cap,
        query_block,
        kv_step_pages,
    )
    num_tokens, num_q_heads, head_dim = queries.shape
    _, page_size, combined_kv_heads, _ = kv_pages.shape
    num_kv_heads = combined_kv_heads // 2
    group = num_q_heads // num_kv_heads
    max_num_seqs, pages_per_seq = page_indices.shape

    block = query_block or choose_query_block(num_tokens, max_num_seqs)
    block = min(block, num_tokens)
    # Static upper bound on the number of blocks: every non-empty sequence wastes at most one
    # partly filled block, and there are at most min(max_num_seqs, num_tokens) of them.
    num_blocks = min(num_tokens, -(-num_tokens // block) + min(max_num_seqs, num_tokens))
    step_pages = kv_step_pages or choose_kv_step_pages(
        num_blocks,
        page_size,
        combined_kv_heads * head_dim * kv_pages.dtype.itemsize,
        num_q_heads * block,
    )
    step_pages = min(step_pages, pages_per_seq)
    step_keys = step_pages * page_size

    # --- Ragged bookkeeping (int32 vectors of size max_num_seqs / num_blocks / num_tokens). ---
    seq_ids = jnp.arange(max_num_seqs, dtype=jnp.int32)
    real = seq_ids < num_seqs[0]
    # Rows past num_seqs may hold anything: pin their cumulative offsets to the end.
    cu = jnp.where(
        jnp.arange(max_num_seqs + 1, dtype=jnp.int32) <= num_seqs[0],
        cu_q_lens,
        cu_q_lens[num_seqs[0]],
    )
    q_starts = cu[:-1]
    q_lens = jnp.where(real, cu[1:] - q_starts, 0)
    seq_kv_lens = jnp.where(real, kv_lens, 0)
    blocks_per_seq = (q_lens + block - 1) // block
    cu_blocks = jnp.cumsum(blocks_per_seq)
    first_block = cu_blocks - blocks_per_seq

    block_ids = jnp.arange(num_blocks, dtype=jnp.int32)
    block_seq = jnp.minimum(
        jnp.searchsorted(cu_blocks, block_ids, side="right", method="compare_all"),
        max_num_seqs - 1,
    ).astype(jnp.int32)
    block_live = block_ids < cu_blocks[-1]
    block_q0 = (block_ids - first_block[block_seq]) * block  # first query index in the seq
    block_q_len = q_lens[block_seq]
    block_kv_len = seq_kv_lens[block_seq]

    rows = block_q0[:, None] + jnp.arange(block, dtype=jnp.int32)[None, :]  # [NB, block]
    row_live = block_live[:, None] & (rows < block_q_len[:, None])
    q_pos = block_kv_len[:, None] - block_q_len[:, None] + rows  # [NB, block]
    token_of_row = jnp.clip(q_starts[block_seq][:, None] + rows, 0, num_tokens - 1)

    # --- First page slot each block can see (0 unless a window or chunk cuts the past). ---
    first_pos = block_kv_len - block_q_len + block_q0  # position of the block's first row
    first_key = jnp.zeros_like(first_pos)
    if sliding_window is not None:
        first_key = jnp.maximum(first_key, first_pos - sliding_window + 1)
    if chunk_size is not None:
        first_key = jnp.maximum(first_key, (first_pos // chunk_size) * chunk_size)
    page_start = jnp.minimum(first_key // page_size, pages_per_seq - 1)
    # Number of page slots each block must visit: up to its last row's position (dynamic, so
    # short contexts in a long bucket and early prompt blocks cost nothing extra).
    last_pos = jnp.where(block_live, block_kv_len - block_q_len + block_q0 + block - 1, 0)
    last_pos = jnp.minimum(last_pos, block_kv_len - 1)
    pages_needed = jnp.maximum(last_pos // page_size + 1 - page_start, 0)
    num_steps = (jnp.max(pages_needed) + step_pages - 1) // step_pages

    # Low-precision matrix products are only fast on CPU for many rows (DESIGN.md section 6):
    # small blocks compute in fp32 (exact upcast), large ones keep bf16 inputs with fp32
    # accumulation.
    compute_dtype = queries.dtype
    if jnp.dtype(compute_dtype) != jnp.float32 and block * group < _LOW_PRECISION_MIN_ROWS:
        compute_dtype = jnp.float32
    q = queries[token_of_row].astype(compute_dtype)  # [NB, block, Hq, D]
    q = q.reshape(num_blocks, block, num_kv_heads, group, head_dim)
    q_pos = q_pos[:, None, None, :, None]  # [NB, 1, 1, block, 1]
    row_live = row_live[:, None, None, :, None]
    kv_limit = block_kv_len[:, None, None, None, None]
    seq_rows = block_seq[:, None]
    step_slots = jnp.arange(step_pages, dtype=jnp.int32)[None, :]
    key_offsets = jnp.arange(step_keys, dtype=jnp.int32)
    precision = lax.Precision.HIGHEST if compute_dtype == jnp.float32 else None

    def step(i, carry):
        """Online-softmax update with the next step_pages pages of every block."""
        row_max, denom, acc = carry
        slot = page_start[:, None] + i * step_pages + step_slots  # [NB, step_pages]
        pages = page_indices[seq_rows, jnp.minimum(slot, pages_per_seq - 1)]
        kv = _gather_pages(kv_pages, pages).astype(compute_dtype)
        kv = kv.reshape(num_blocks, step_keys, num_kv_heads, 2, head_dim)
        k_pos = (slot[:, :1] * page_size + key_offsets)[:, None, None, None, :]
        visible = row_live & (k_pos <= q_pos) & (k_pos < kv_limit)
        if sliding_window is not None:
            visible &= k_pos > q_pos - sliding_window
        if chunk_size is not None:
            visible &= (k_pos // chunk_size) == (q_pos // chunk_size)
        logits = jnp.einsum(
            "nbhgd,nkhd->nhgbk",
            q,
            kv[:, :, :, 0, :],
            preferred_element_type=jnp.float32,
            precision=precision,
        )
        logits = logits * sm_scale
        if soft_cap is not None:
            logits = soft_cap * jnp.tanh(logits / soft_cap)
        logits = jnp.where(visible, logits, _MASKED_LOGIT)
        new_max = jnp.maximum(row_max, jnp.max(logits, axis=-1))
        rescale = jnp.exp(row_max - new_max)
        probs = jnp.where(visible, jnp.exp(logits - new_max[..., None]), 0.0)
        denom = denom * rescale + jnp.sum(probs, axis=-1)
        # A zero weight times a NaN/inf left in a null or stale page is still NaN: zero the
        # values of keys no row of the block can see (past the context, or released by the
        # window / chunk) before the weighted sum.
        block_keys = k_pos[:, 0, 0, 0, :]
        in_context = (block_keys < block_kv_len[:, None]) & (block_keys >= first_key[:, None])
        in_context = in_context[:, :, None, None]
        v = jnp.where(in_context, kv[:, :, :, 1, :], 0)
        acc = acc * rescale[..., None] + jnp.einsum(
            "nhgbk,nkhd->nhgbd",
            probs.astype(v.dtype) if v.dtype != jnp.float32 else probs,
            v,
            preferred_element_type=jnp.float32,
            precision=precision,
        )
        return new_max, denom, acc

    stats_shape = (num_blocks, num_kv_heads, group, block)
    init = (
        jnp.full(stats_shape, _MASKED_LOGIT, jnp.float32),
        jnp.zeros(stats_shape, jnp.float32),
        jnp.zeros((*stats_shape, head_dim), jnp.float32),
    )
    _, denom, acc = lax.fori_loop(0, num_steps, step, init)
    out = acc / jnp.where(denom > 0, denom, 1.0)[..., None]  # rows with nothing visible: 0
    out = jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(num_blocks * block, num_q_heads, head_dim)

    # --- Back to token order: token t is row (t - q_start) of its sequence. ---
    token_ids = jnp.arange(num_tokens, dtype=jnp.int32)
    token_seq = jnp.minimum(
        jnp.searchsorted(cu[1:], token_ids, side="right", method="compare_all"),
        max_num_seqs - 1,
    )
    row_in_seq = token_ids - q_starts[token_seq]
    flat_row = (first_block[token_seq] + row_in_seq // block) * block + row_in_seq % block
    flat_row = jnp.clip(flat_row, 0, num_blocks * block - 1)
    return out[flat_row].astype(queries.dtype)
