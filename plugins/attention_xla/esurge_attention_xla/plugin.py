"""Entry point of the XLA attention backend: declares it without importing the kernel."""

from __future__ import annotations

from esurge_core.capabilities import Capabilities
from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import AttentionBackendRegistrar


@hookimpl
def esurge_register_attention_backends(register: AttentionBackendRegistrar) -> None:
    """Register ``xla``: runs everywhere; ``auto`` prefers it on CPU, falls back to it elsewhere."""
    register(
        name="xla",
        loader="esurge_attention_xla.backend:XLAAttentionBackend",
        capabilities=Capabilities.of(
            platforms=["cpu", "gpu", "tpu"],
            dtypes=["float32", "bfloat16"],
            patterns=["full", "sliding_window", "chunked"],
            soft_cap=True,
            auto_priority={"cpu": 100, "gpu": 10, "tpu": 10},
        ),
        description="ragged paged attention in jax.numpy (reference, CPU production path)",
    )
