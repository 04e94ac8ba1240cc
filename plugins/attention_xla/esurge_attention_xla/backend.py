"""The ``xla`` attention backend object handed to models."""

from __future__ import annotations

from dataclasses import dataclass

from esurge_attention_xla.kernel import ragged_paged_attention, write_kv_pages


@dataclass(frozen=True)
class XLAAttentionBackend:
    """Ragged paged attention and K/V page writes in plain jax.numpy (see ``kernel``)."""

    name: str = "xla"

    ragged_paged_attention = staticmethod(ragged_paged_attention)
    write_kv_pages = staticmethod(write_kv_pages)
