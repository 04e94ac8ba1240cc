"""Random ragged batches for attention-kernel tests, laid out the way the model runner packs them.

A batch mixes prefill and decode sequences, pads the token axis and the sequence axis, scatters
each sequence's pages over random non-contiguous page ids of one shared pool and leaves unused
page-table entries at ``0`` (the null page), which is filled with garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RaggedBatch:
    """Inputs of ``ragged_paged_attention`` (numpy) plus what the tests need to check them."""

    queries: np.ndarray  # [num_tokens, num_q_heads, head_dim]
    kv_pages: np.ndarray  # [num_pages, page_size, 2 * num_kv_heads, head_dim]
    kv_lens: np.ndarray  # int32[max_num_seqs]
    page_indices: np.ndarray  # int32[max_num_seqs, pages_per_seq]
    cu_q_lens: np.ndarray  # int32[max_num_seqs + 1]
    num_seqs: np.ndarray  # int32[1]

    @property
    def num_real_tokens(self) -> int:
        """Number of non-padding query tokens."""
        return int(self.cu_q_lens[int(self.num_seqs[0])])

    def inputs(self) -> tuple[np.ndarray, ...]:
        """Positional arguments of the kernel."""
        return (
            self.queries,
            self.kv_pages,
            self.kv_lens,
            self.page_indices,
            self.cu_q_lens,
            self.num_seqs,
        )


def random_batch(
    rng: np.random.Generator,
    *,
    num_tokens: int,
    max_num_seqs: int,
    pages_per_seq: int,
    page_size: int,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    release_before: int | None = None,
    null_page_fill: float = 50.0,
) -> RaggedBatch:
    """Draw a random ragged batch.

    Args:
        rng: Source of randomness (tests seed it freshly each run).
        num_tokens: Padded token count; at least one padding token is left at the end.
        max_num_seqs: Padded sequence count; at least one padding sequence row is left.
        pages_per_seq: Page-table width; contexts fit in ``pages_per_seq * page_size``.
        page_size: Tokens per page.
        num_q_heads: Query heads.
        num_kv_heads: KV heads.
        head_dim: Head dimension.
        release_before: If set (a window or chunk length), pages that every new query of a
            sequence can no longer see under that limit are swapped for the null page, as the
            KV-cache manager does for sliding-window layers.
        null_page_fill: Value written all over page 0 (garbage a kernel must mask).

    Returns:
        The batch.
    """
    max_context = pages_per_seq * page_size
    num_seqs = int(rng.integers(1, max_num_seqs))  # leave >= 1 padding sequence row
    budget = num_tokens - 1  # leave >= 1 padding token
    q_lens: list[int] = []
    for i in range(num_seqs):
        remaining_seqs = num_seqs - i - 1
        room = min(budget - remaining_seqs, max_context)
        if rng.random() < 0.5 or room <= 1:
            q_len = 1  # decode
        else:
            q_len = int(rng.integers(2, room + 1))  # prefill (possibly a continued chunk)
        q_lens.append(q_len)
        budget -= q_len
    kv_lens = [int(rng.integers(q, max_context + 1)) for q in q_lens]

    pages_needed = [-(-kv // page_size) for kv in kv_lens]
    # A fixed pool size per layout (as in a real cache) so jitted kernels are reused: the null
    # page, room for every sequence row's pages, and a few pages no one references.
    num_pages = 1 + max_num_seqs * pages_per_seq + 3
    pool = rng.permutation(np.arange(1, num_pages)).astype(np.int32)
    page_indices = np.zeros((max_num_seqs, pages_per_seq), np.int32)
    taken = 0
    for i, (q_len, kv_len, n) in enumerate(zip(q_lens, kv_lens, pages_needed)):
        page_indices[i, :n] = pool[taken : taken + n]
        taken += n
        if release_before is not None:
            first_query = kv_len - q_len
            first_visible = max(0, first_query - release_before + 1)
            page_indices[i, : first_visible // page_size] = 0

    cu_q_lens = np.zeros(max_num_seqs + 1, np.int32)
    cu_q_lens[1 : num_seqs + 1] = np.cumsum(q_lens)
    cu_q_lens[num_seqs + 1 :] = cu_q_lens[num_seqs]
    kv_lens_arr = np.zeros(max_num_seqs, np.int32)
    kv_lens_arr[:num_seqs] = kv_lens
    kv_lens_arr[num_seqs:] = rng.integers(0, max_context + 1, max_num_seqs - num_seqs)

    queries = rng.standard_normal((num_tokens, num_q_heads, head_dim)).astype(np.float32)
    kv_pages = rng.standard_normal((num_pages, page_size, 2 * num_kv_heads, head_dim)).astype(
        np.float32
    )
    kv_pages[0] = null_page_fill
    return RaggedBatch(
        queries=queries,
        kv_pages=kv_pages,
        kv_lens=kv_lens_arr,
        page_indices=page_indices,
        cu_q_lens=cu_q_lens,
        num_seqs=np.array([num_seqs], np.int32),
    )


def dense_reference(
    batch: RaggedBatch,
    *,
    sm_scale: float,
    sliding_window: int | None = None,
    chunk_size: int | None = None,
    soft_cap: float | None = None,
) -> np.ndarray:
    """Float64 attention of every real token over its sequence's contiguous K/V, masked densely.

    Returns ``[num_real_tokens, num_q_heads, head_dim]``.
    """
    num_q_heads, head_dim = batch.queries.shape[1:]
    num_kv_heads = batch.kv_pages.shape[2] // 2
    group = num_q_heads // num_kv_heads
    outputs = []
    for i in range(int(batch.num_seqs[0])):
        start, end = int(batch.cu_q_lens[i]), int(batch.cu_q_lens[i + 1])
        kv_len, q_len = int(batch.kv_lens[i]), end - start
        pages = batch.kv_pages[batch.page_indices[i]].astype(np.float64)
        pages = pages.reshape(-1, num_kv_heads, 2, head_dim)[:kv_len]
        k = np.repeat(pages[:, :, 0], group, axis=1)  # [kv_len, Hq, D]
        v = np.repeat(pages[:, :, 1], group, axis=1)
        q = batch.queries[start:end].astype(np.float64)
        logits = np.einsum("qhd,khd->hqk", q, k) * sm_scale
        if soft_cap is not None:
            logits = soft_cap * np.tanh(logits / soft_cap)
        q_pos = (kv_len - q_len + np.arange(q_len))[:, None]
        k_pos = np.arange(kv_len)[None, :]
        visible = k_pos <= q_pos
        if sliding_window is not None:
            visible &= k_pos > q_pos - sliding_window
        if chunk_size is not None:
            visible &= (k_pos // chunk_size) == (q_pos // chunk_size)
        logits = np.where(visible[None], logits, -np.inf)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        outputs.append(np.einsum("hqk,khd->qhd", probs, v))
    return np.concatenate(outputs, axis=0)
