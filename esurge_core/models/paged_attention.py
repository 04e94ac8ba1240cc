"""One layer's attention over the paged KV cache, through the selected backend (contract A).

The models never implement attention themselves: they write this step's keys and values
into the layer's pages and call the backend's ragged paged attention kernel with the
layer's pattern (sliding window, chunk, soft cap) and its group's page table.
"""

from __future__ import annotations

import jax

from esurge_core.attention.backend import AttentionBackend
from esurge_core.attention.metadata import AttentionMetadata
from esurge_core.models.attention_pattern import LayerAttention

#: What a model needs of an attention backend: the two functions of contract A.
AttentionKernels = AttentionBackend


def paged_attention(
    attention: AttentionKernels,
    queries: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    kv_pages: jax.Array,
    metadata: AttentionMetadata,
    group: int,
    layer: LayerAttention,
    *,
    sm_scale: float,
    soft_cap: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Write this step's K/V into the layer's pages, then attend.

    Args:
        attention: The backend.
        queries: [T, num_q_heads, head_dim].
        keys, values: [T, num_kv_heads, head_dim], already rotated/normalised.
        kv_pages: This layer's cache [num_pages, page_size, 2 * num_kv_heads, head_dim].
        metadata: The step's attention metadata.
        group: The layer's KV-cache group (selects page table and slot mapping).
        layer: The layer's attention pattern.
        sm_scale: Multiplier of q.k before the softmax.
        soft_cap: Optional tanh soft cap of the attention logits.

    Returns:
        The attention output [T, num_q_heads, head_dim] and the updated pages.
    """
    kv_pages = attention.write_kv_pages(kv_pages, keys, values, metadata.slot_mapping[group])
    out = attention.ragged_paged_attention(
        queries,
        kv_pages,
        metadata.kv_lens,
        metadata.page_indices[group],
        metadata.cu_q_lens,
        metadata.num_seqs,
        sm_scale=sm_scale,
        sliding_window=layer.sliding_window,
        chunk_size=layer.chunk_size,
        soft_cap=soft_cap,
    )
    return out, kv_pages
