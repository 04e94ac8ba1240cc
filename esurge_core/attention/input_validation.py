"""Static checks of contract-A inputs, with errors that name the bad value and the rule."""

from __future__ import annotations

import jax


def validate_inputs(
    queries: jax.Array,
    kv_pages: jax.Array,
    kv_lens: jax.Array,
    page_indices: jax.Array,
    cu_q_lens: jax.Array,
    num_seqs: jax.Array,
    *,
    sliding_window: int | None,
    chunk_size: int | None,
    soft_cap: float | None,
) -> None:
    """Check static shapes and static options of a ragged paged attention call.

    Raises:
        ValueError: naming the argument, its value and what is allowed.
    """
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
