"""Entry point of the native CPU attention backend: declares it without importing the kernel."""

from __future__ import annotations

from esurge_core.capabilities import Capabilities
from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import AttentionBackendRegistrar


@hookimpl
def esurge_register_attention_backends(register: AttentionBackendRegistrar) -> None:
    """Register ``cpu``: the fastest backend on CPU, so ``auto`` prefers it there."""
    register(
        name="cpu",
        loader="esurge_attention_cpu.backend:CPUAttentionBackend",
        capabilities=Capabilities.of(
            platforms=["cpu"],
            dtypes=["float32", "bfloat16"],
            patterns=["full", "sliding_window", "chunked"],
            soft_cap=True,
            auto_priority={"cpu": 200},
        ),
        description="ragged paged attention as a C++ kernel through the XLA FFI (CPU)",
    )
