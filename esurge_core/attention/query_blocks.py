"""Ragged query tokens cut into fixed-size query blocks, and the way back to token order.

A *query block* holds up to ``block`` consecutive new tokens of one sequence, so a kernel can
give each block one grid program and one contiguous range of key positions. A sequence with
``q_len`` new tokens owns ``ceil(q_len / block)`` blocks; with at most
``min(max_num_seqs, num_tokens)`` partly filled blocks, ``ceil(num_tokens / block) +
min(max_num_seqs, num_tokens)`` blocks always suffice (a static bound, so shapes stay static
under ``jax.jit``). Blocks past the real ones are *dead*: they have no live rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True, slots=True)
class QueryBlocks:
    """Per-block scalars a kernel needs, and the gathers into and out of block layout.

    Attributes:
        block: Tokens per block (static).
        seq: ``int32[NB]`` sequence row of each block (a valid row even for dead blocks).
        first_pos: ``int32[NB]`` context position of each block's first token.
        live_rows: ``int32[NB]`` number of real tokens in each block (0 for dead blocks).
        kv_len: ``int32[NB]`` context length of each block's sequence.
        token_of_row: ``int32[NB, block]`` token index feeding each block row (clamped).
        row_of_token: ``int32[num_tokens]`` flat block row (``b * block + r``) of each token.
    """

    block: int
    seq: jax.Array
    first_pos: jax.Array
    live_rows: jax.Array
    kv_len: jax.Array
    token_of_row: jax.Array
    row_of_token: jax.Array

    @property
    def num_blocks(self) -> int:
        """Static number of blocks (live and dead)."""
        return self.seq.shape[0]


def max_query_blocks(num_tokens: int, max_num_seqs: int, block: int) -> int:
    """Static upper bound on the number of query blocks of a batch bucket."""
    return min(num_tokens, -(-num_tokens // block) + min(max_num_seqs, num_tokens))


def plan_query_blocks(
    kv_lens: jax.Array,
    cu_q_lens: jax.Array,
    num_seqs: jax.Array,
    *,
    num_tokens: int,
    block: int,
    num_blocks: int | None = None,
) -> QueryBlocks:
    """Cut the ragged batch described by contract-A metadata into query blocks.

    Args:
        kv_lens: ``int32[max_num_seqs]`` context lengths (new tokens included).
        cu_q_lens: ``int32[max_num_seqs + 1]`` cumulative query lengths.
        num_seqs: ``int32[1]`` number of real sequences.
        num_tokens: Static (padded) number of query tokens.
        block: Static tokens per block.
        num_blocks: Static number of blocks; ``None`` uses :func:`max_query_blocks`.

    Returns:
        The block plan.
    """
    max_num_seqs = kv_lens.shape[0]
    if num_blocks is None:
        num_blocks = max_query_blocks(num_tokens, max_num_seqs, block)
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
    q0 = (block_ids - first_block[block_seq]) * block  # first query index within the sequence
    q_len = q_lens[block_seq]
    kv_len = seq_kv_lens[block_seq]
    live_rows = jnp.where(block_live, jnp.clip(q_len - q0, 0, block), 0).astype(jnp.int32)
    first_pos = (kv_len - q_len + q0).astype(jnp.int32)

    rows = q0[:, None] + jnp.arange(block, dtype=jnp.int32)[None, :]
    token_of_row = jnp.clip(q_starts[block_seq][:, None] + rows, 0, num_tokens - 1)

    token_ids = jnp.arange(num_tokens, dtype=jnp.int32)
    token_seq = jnp.minimum(
        jnp.searchsorted(cu[1:], token_ids, side="right", method="compare_all"),
        max_num_seqs - 1,
    )
    row_in_seq = token_ids - q_starts[token_seq]
    flat = (first_block[token_seq] + row_in_seq // block) * block + row_in_seq % block
    row_of_token = jnp.clip(flat, 0, num_blocks * block - 1).astype(jnp.int32)
    return QueryBlocks(
        block=block,
        seq=block_seq,
        first_pos=first_pos,
        live_rows=live_rows,
        kv_len=kv_len.astype(jnp.int32),
        token_of_row=token_of_row.astype(jnp.int32),
        row_of_token=row_of_token,
    )


def to_block_layout(queries: jax.Array, plan: QueryBlocks, num_kv_heads: int) -> jax.Array:
    """``[T, Hq, D]`` -> ``[NB, Hkv, block * group, D]``; row ``r`` of kv head ``h`` is token
    ``r // group`` of the block and query head ``h * group + r % group``."""
    _, num_q_heads, head_dim = queries.shape
    group = num_q_heads // num_kv_heads
    q = queries[plan.token_of_row]  # [NB, block, Hq, D]
    q = q.reshape(plan.num_blocks, plan.block, num_kv_heads, group, head_dim)
    q = jnp.transpose(q, (0, 2, 1, 3, 4))
    return q.reshape(plan.num_blocks, num_kv_heads, plan.block * group, head_dim)


def from_block_layout(out: jax.Array, plan: QueryBlocks, num_q_heads: int) -> jax.Array:
    """Inverse of :func:`to_block_layout`: ``[NB, Hkv, block * group, D]`` -> ``[T, Hq, D]``."""
    num_blocks, num_kv_heads, _, head_dim = out.shape
    group = num_q_heads // num_kv_heads
    out = out.reshape(num_blocks, num_kv_heads, plan.block, group, head_dim)
    out = jnp.transpose(out, (0, 2, 1, 3, 4)).reshape(
        num_blocks * plan.block, num_q_heads, head_dim
    )
    return out[plan.row_of_token]
