"""Entry point of the Pallas TPU attention backend: declares it without importing the kernel."""

from __future__ import annotations

from esurge_core.capabilities import Capabilities
from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import AttentionBackendRegistrar


@hookimpl
def esurge_register_attention_backends(register: AttentionBackendRegistrar) -> None:
    """Register ``pallas``: TPU only; ``auto`` prefers it over ``xla`` on TPU.

    Mosaic needs the page size to be a multiple of 16 (a page of K or V is reshaped into the
    sublane axis, 16 rows per tile for bfloat16). Head dims that are multiples of 128 fill the
    TPU's lanes; 64 is accepted (half-empty lanes), others fall back to ``xla``.
    """
    register(
        name="pallas",
        loader="esurge_attention_pallas.backend:PallasAttentionBackend",
        capabilities=Capabilities.of(
            platforms=["tpu"],
            dtypes=["float32", "bfloat16"],
            head_dims=[64, 128, 256],
            page_size_multiple=16,
            patterns=["full", "sliding_window", "chunked"],
            soft_cap=True,
            auto_priority={"tpu": 200},
        ),
        description="ragged paged attention as a Pallas TPU (Mosaic) kernel",
    )
