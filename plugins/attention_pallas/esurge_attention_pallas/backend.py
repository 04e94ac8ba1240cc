"""The ``pallas`` attention backend object handed to models."""

from __future__ import annotations

from dataclasses import dataclass

import jax

from esurge_attention_pallas.block_sizes import BlockSizes
from esurge_attention_pallas.kernel import ragged_paged_attention
from esurge_core.attention.kv_write import write_kv_pages


@dataclass(frozen=True)
class PallasAttentionBackend:
    """Ragged paged attention as a Pallas TPU kernel, and the K/V page write.

    Attributes:
        name: Backend name (``"pallas"``).
        interpret: Run the kernel in Pallas TPU interpret mode. ``None`` (default) interprets
            exactly when JAX's default backend is not a TPU, so the backend runs on CPU too
            (slowly; meant for tests).
        block_sizes: Static tiling for every call; ``None`` picks it from the shapes.
    """

    name: str = "pallas"
    interpret: bool | None = None
    block_sizes: BlockSizes | None = None

    def _interpret(self) -> bool:
        if self.interpret is not None:
            return self.interpret
        return jax.default_backend() != "tpu"

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
        """Contract A attention (see ``esurge_attention_pallas.kernel``)."""
        return ragged_paged_attention(
            queries,
            kv_pages,
            kv_lens,
            page_indices,
            cu_q_lens,
            num_seqs,
            sm_scale=sm_scale,
            sliding_window=sliding_window,
            chunk_size=chunk_size,
            soft_cap=soft_cap,
            block_sizes=self.block_sizes,
            interpret=self._interpret(),
        )

    write_kv_pages = staticmethod(write_kv_pages)
