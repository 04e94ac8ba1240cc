"""The interface every attention backend plugin implements (DESIGN.md §6).

A backend's registered loader returns a factory; calling it returns an object with the two
functions below. The model calls them inside its jitted forward, so they must be pure and
traceable, with every keyword argument static.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax


@runtime_checkable
class AttentionBackend(Protocol):
    """Ragged paged attention and the K/V page write that feeds it."""

    name: str
    # Optional: ``cost_follows_kv_lens = True`` says the kernel's work follows each sequence's
    # ``kv_lens`` whatever the width of ``page_indices``; the runner then passes tables of one
    # width (the longest context's) instead of compiling a step per power-of-two width.

    def ragged_paged_attention(
        self,
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
    ) -> jax.Array:
        """Attention of packed ragged queries over paged K/V.

        Args:
            queries: ``[num_tokens, num_q_heads, head_dim]``.
            kv_pages: ``[num_pages, page_size, 2 * num_kv_heads, head_dim]``, K and V
                interleaved along the third axis.
            kv_lens: ``int32[max_num_seqs]`` context length of each sequence, new tokens
                included.
            page_indices: ``int32[max_num_seqs, pages_per_seq]``; 0 is the null page.
            cu_q_lens: ``int32[max_num_seqs + 1]`` cumulative query lengths.
            num_seqs: ``int32[1]`` number of real sequences.
            sm_scale: softmax scale.
            sliding_window: keys visible to a query at position p: ``(p - window, p]``.
            chunk_size: chunked local attention: keys in p's chunk, up to p.
            soft_cap: ``cap * tanh(logits / cap)`` when set.

        Returns:
            ``[num_tokens, num_q_heads, head_dim]`` in the dtype of ``queries``.
        """
        ...

    def write_kv_pages(
        self, kv_pages: jax.Array, keys: jax.Array, values: jax.Array, slot_mapping: jax.Array
    ) -> jax.Array:
        """Write each token's K/V (``[num_tokens, num_kv_heads, head_dim]``) at its slot
        (``page * page_size + offset``) and return the updated pages."""
        ...
