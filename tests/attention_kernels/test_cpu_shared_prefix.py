"""The CPU kernel over sequences whose page tables share a prefix (prefix caching maps a common
prompt's pages to the same physical pages): on CPUs with AVX-512 and no tile unit a first pass
attends every sharing sequence's rows to those keys together and the ordinary items continue
from its softmax state. Whatever the path, the contract holds: equal to the XLA kernel within
1e-5 in fp32, for decode tokens and prefill chunks, groups limited by their shortest member,
sequences sharing too little, and layouts with a window, chunking or a soft cap (which the
pass leaves alone or must honour)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu import kernel
from esurge_attention_xla.kernel import ragged_paged_attention as xla

PAGES_PER_SEQ = 12

# (q_len, kv_len, shared pages, group): the first `shared pages` of a sequence's table are its
# group's; the rest are its own.
SEQUENCES = [
    (1, 130, 6, "a"),  # decode over all six shared pages
    (1, 97, 6, "a"),  # decode, its cached keys end exactly at the shared pages' end
    (40, 150, 6, "a"),  # a prefill chunk after the shared pages
    (1, 70, 4, "a"),  # four cached pages: limits group a to four
    (3, 66, 4, "a"),  # a short chunk
    (1, 50, 1, "a"),  # shares one page only: left out of the group
    (1, 60, 3, "b"),  # a second group of two
    (20, 80, 3, "b"),
    (5, 40, 0, None),  # shares nothing
    (1, 17, 1, "b"),  # one cached page: too short to join
]


def _batch(page_size, q_heads, kv_heads, head_dim, kv_dtype, seed=0):
    rng = np.random.default_rng(seed)
    num_seqs = len(SEQUENCES)
    num_pages = 1 + num_seqs * PAGES_PER_SEQ
    pool = list(rng.permutation(np.arange(1, num_pages)))
    groups = {name: [int(pool.pop()) for _ in range(PAGES_PER_SEQ)] for name in ("a", "b")}
    table = np.zeros((num_seqs + 2, PAGES_PER_SEQ), np.int32)
    for i, (_, kv_len, shared, group) in enumerate(SEQUENCES):
        needed = -(-kv_len // page_size)
        assert needed <= PAGES_PER_SEQ
        for p in range(needed):
            table[i, p] = groups[group][p] if p < shared else pool.pop()
    q_lens = [q for q, *_ in SEQUENCES]
    num_tokens = sum(q_lens) + 5
    cu = np.zeros(num_seqs + 3, np.int32)
    cu[1 : num_seqs + 1] = np.cumsum(q_lens)
    cu[num_seqs + 1 :] = cu[num_seqs]
    kv_lens = np.zeros(num_seqs + 2, np.int32)
    kv_lens[:num_seqs] = [kv for _, kv, *_ in SEQUENCES]
    kv_pages = rng.standard_normal((num_pages, page_size, 2 * kv_heads, head_dim))
    kv_pages[0] = np.nan  # the null page: must never be read
    queries = rng.standard_normal((num_tokens, q_heads, head_dim)).astype(np.float32)
    inputs = [
        jnp.asarray(queries),
        jnp.asarray(kv_pages, kv_dtype),
        jnp.asarray(kv_lens),
        jnp.asarray(table),
        jnp.asarray(cu),
        jnp.asarray([num_seqs], jnp.int32),
    ]
    return inputs, int(cu[num_seqs])


# (page size, q heads, kv heads, head dim, cache dtype, options)
CASES = {
    "ps16-gqa3-d64-bf16": (16, 9, 3, 64, jnp.bfloat16, {}),
    "ps16-gqa4-d128-fp32": (16, 8, 2, 128, jnp.float32, {}),
    "ps16-mha-d256-bf16": (16, 2, 2, 256, jnp.bfloat16, {}),
    "ps16-gqa3-d64-softcap": (16, 9, 3, 64, jnp.bfloat16, {"soft_cap": 5.0}),
    "ps16-gqa3-d64-window": (16, 9, 3, 64, jnp.bfloat16, {"sliding_window": 70}),
    "ps16-gqa3-d64-chunk": (16, 9, 3, 64, jnp.bfloat16, {"chunk_size": 64}),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", CASES)
def test_sequences_sharing_prefix_pages_match_xla_within_1e_5(name, seed):
    page_size, q_heads, kv_heads, head_dim, kv_dtype, options = CASES[name]
    inputs, n = _batch(page_size, q_heads, kv_heads, head_dim, kv_dtype, seed)
    options = {"sm_scale": 0.3, **options}
    got = np.asarray(kernel.ragged_paged_attention(*inputs, **options))
    want = np.asarray(xla(*inputs, **options))
    assert np.isfinite(got[:n]).all()
    np.testing.assert_allclose(got[:n], want[:n], atol=1e-5)
    assert not got[n:].any()
