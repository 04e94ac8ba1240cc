"""Entry point of the Triton attention backend: declares it without importing the kernel."""

from __future__ import annotations

from esurge_core.capabilities import Capabilities
from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import AttentionBackendRegistrar


@hookimpl
def esurge_register_attention_backends(register: AttentionBackendRegistrar) -> None:
    """Register ``triton``: NVIDIA GPUs only; ``auto`` prefers it over ``xla`` on GPU.

    Triton tiles are powers of two and ``tl.dot`` needs at least 16 x 16 operands, so head dims
    are powers of two from 16 to 256 and page sizes multiples of 16.
    """
    register(
        name="triton",
        loader="esurge_attention_triton.backend:TritonAttentionBackend",
        capabilities=Capabilities.of(
            platforms=["gpu"],
            dtypes=["float32", "bfloat16"],
            head_dims=[16, 32, 64, 128, 256],
            page_size_multiple=16,
            patterns=["full", "sliding_window", "chunked"],
            soft_cap=True,
            auto_priority={"gpu": 200},
        ),
        description="ragged paged attention as a Pallas kernel lowered through Triton",
    )
