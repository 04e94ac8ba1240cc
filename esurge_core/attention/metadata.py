"""Attention metadata of one packed ragged batch, passed to the model forward (contract B).

The model runner builds one `AttentionMetadata` per step on the host (numpy), copies it to
the device once, and hands it to `model.forward`. It is a JAX pytree, so it crosses `jax.jit`
boundaries as ordinary array leaves; every shape is static per bucket (the runner pads the
number of tokens T, of sequences S and of pages per sequence P to a small set of sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True)
class AttentionMetadata:
    """Where each sequence's tokens and KV pages are, for one step of a packed ragged batch.

    Attributes:
        kv_lens: int32[S]. Total context length of each sequence including this step's new
            tokens; rows >= `num_seqs[0]` are padding.
        cu_q_lens: int32[S + 1]. Cumulative query lengths: sequence i's new tokens are rows
            `cu_q_lens[i]:cu_q_lens[i + 1]` of the packed batch.
        num_seqs: int32[1]. Number of real sequences.
        page_indices: One int32[S, P] page table per KV-cache group (in the order of
            `model.kv_cache_groups()`); unused entries and released pages are 0 (the null page).
        slot_mapping: One int32[T] per KV-cache group: where each new token's K/V goes,
            `page_id * page_size + offset`; padding tokens point into page 0.
    """

    kv_lens: jax.Array
    cu_q_lens: jax.Array
    num_seqs: jax.Array
    page_indices: tuple[jax.Array, ...]
    slot_mapping: tuple[jax.Array, ...]
