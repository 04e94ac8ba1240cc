"""A miniature model runner for the model tests: packs ragged batches over a paged cache.

It plays the engine's part (page allocation per KV-cache group, slot mapping, releasing
pages that fell out of a sliding window or chunk, padding to one static bucket) in plain
numpy, so the tests exercise the models exactly as the runner will call them: one jitted,
cache-donating step per bucket shape.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from esurge_attention_xla import kernel

from esurge_core.attention.metadata import AttentionMetadata
from esurge_core.kv_cache.groups import KVCacheGroupSpec
from esurge_core.models.causal_lm import CausalLM

#: The XLA kernel of the attention_xla plugin, as the backend object the models call.
XLA_ATTENTION = types.SimpleNamespace(
    ragged_paged_attention=kernel.ragged_paged_attention,
    write_kv_pages=kernel.write_kv_pages,
)


@dataclass
class _Sequence:
    length: int = 0  # tokens already in the cache
    pages: list[list[int]] = field(default_factory=list)  # one page list per group


def _released(group: KVCacheGroupSpec, first_query_pos: int, page_size: int, page: int) -> bool:
    """Whether page index `page` lies wholly before what a query at `first_query_pos` sees."""
    last_pos_in_page = (page + 1) * page_size - 1
    return last_pos_in_page < group.first_visible_position(first_query_pos)


class PagedBatchRunner:
    """Runs steps of a model over a paged KV cache with fixed (bucketed) shapes."""

    def __init__(
        self,
        model: CausalLM,
        params: dict,
        *,
        page_size: int = 4,
        num_pages: int = 64,
        max_tokens: int = 32,
        max_seqs: int = 4,
        pages_per_seq: int = 8,
        attention: object = XLA_ATTENTION,
    ) -> None:
        self.model = model
        self.params = params
        self.page_size = page_size
        self.max_tokens = max_tokens
        self.max_seqs = max_seqs
        self.pages_per_seq = pages_per_seq
        self.groups = model.kv_cache_groups()
        self.caches = model.init_kv_caches(num_pages, page_size)
        self._free = list(range(1, num_pages))  # page 0 is the null page
        self._seqs: dict[str, _Sequence] = {}
        self._step = jax.jit(
            functools.partial(_step, model, attention=attention), donate_argnums=(1,)
        )

    def step(self, work: dict[str, list[int]]) -> dict[str, np.ndarray]:
        """Append `work[seq]` tokens to each named sequence in one packed step.

        Returns:
            Each sequence's float32 logits [len(work[seq]), vocab].
        """
        ps, n_groups = self.page_size, len(self.groups)
        ids = np.zeros(self.max_tokens, np.int32)
        positions = np.zeros(self.max_tokens, np.int32)
        slots = np.zeros((n_groups, self.max_tokens), np.int32)
        kv_lens = np.zeros(self.max_seqs, np.int32)
        cu = np.zeros(self.max_seqs + 1, np.int32)
        tables = np.zeros((n_groups, self.max_seqs, self.pages_per_seq), np.int32)
        rows: dict[str, slice] = {}
        t = 0
        for s, (name, tokens) in enumerate(work.items()):
            seq = self._seqs.setdefault(name, _Sequence(pages=[[] for _ in self.groups]))
            start, end = seq.length, seq.length + len(tokens)
            for g in range(n_groups):
                while len(seq.pages[g]) * ps < end:
                    seq.pages[g].append(self._free.pop(0))
                for i, page in enumerate(seq.pages[g]):
                    visible = not _released(self.groups[g], start, ps, i)
                    tables[g, s, i] = page if visible else 0
            for j, token in enumerate(tokens):
                pos = start + j
                ids[t + j] = token
                positions[t + j] = pos
                for g in range(n_groups):
                    slots[g, t + j] = seq.pages[g][pos // ps] * ps + pos % ps
            rows[name] = slice(t, t + len(tokens))
            t += len(tokens)
            kv_lens[s] = end
            cu[s + 1] = t
            seq.length = end
        cu[len(work) + 1 :] = t
        metadata = AttentionMetadata(
            kv_lens=jnp.asarray(kv_lens),
            cu_q_lens=jnp.asarray(cu),
            num_seqs=jnp.asarray([len(work)], jnp.int32),
            page_indices=tuple(jnp.asarray(table) for table in tables),
            slot_mapping=tuple(jnp.asarray(slot) for slot in slots),
        )
        logits, self.caches = self._step(
            self.params, self.caches, jnp.asarray(ids), jnp.asarray(positions), metadata
        )
        logits = np.asarray(logits)
        return {name: logits[r] for name, r in rows.items()}


def _step(model, params, caches, ids, positions, metadata, *, attention):
    hidden, caches = model.forward(params, caches, ids, positions, metadata, attention)
    return model.compute_logits(params, hidden), caches
