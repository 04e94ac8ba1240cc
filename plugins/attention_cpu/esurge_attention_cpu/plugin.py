"""Entry point of the native CPU backends (attention, matmul): declares them, imports no kernel."""

from __future__ import annotations

import os
import shlex
import shutil

from esurge_core.capabilities import Capabilities
from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import AttentionBackendRegistrar, MatmulBackendRegistrar


def compiler_available() -> bool:
    """Whether the C++ compiler the kernel is built with (``$CXX``, else ``c++``) exists."""
    command = shlex.split(os.environ.get("CXX", "c++")) or ["c++"]
    return shutil.which(command[0]) is not None


def _native_auto_priority_and_description(description: str) -> tuple[dict[str, int], str]:
    """A backend built from this package's C++ sources is preferred by ``auto`` on CPU where a
    compiler exists; without one ``auto`` leaves it out, and its description says why."""
    if compiler_available():
        return {"cpu": 200}, description
    return {}, f"{description}; no C++ compiler found, so not in 'auto'"


@hookimpl
def esurge_register_attention_backends(register: AttentionBackendRegistrar) -> None:
    """Register ``cpu``: the fastest backend on CPU, so ``auto`` prefers it there.

    Without a C++ compiler the kernel cannot be built, so ``auto`` leaves it out (and picks
    ``xla``); naming it explicitly then fails with the build error, which says what to install.
    """
    priority, description = _native_auto_priority_and_description(
        "ragged paged attention as a C++ kernel through the XLA FFI (CPU)"
    )
    register(
        name="cpu",
        loader="esurge_attention_cpu.backend:CPUAttentionBackend",
        capabilities=Capabilities.of(
            platforms=["cpu"],
            dtypes=["float32", "bfloat16"],
            patterns=["full", "sliding_window", "chunked"],
            soft_cap=True,
            auto_priority=priority,
        ),
        description=description,
    )


@hookimpl
def esurge_register_matmul_backends(register: MatmulBackendRegistrar) -> None:
    """Register ``cpu``: decode-sized weight products in C++, preferred by ``auto`` on CPU.

    Like the attention backend, ``auto`` leaves it out where no C++ compiler exists.
    """
    priority, description = _native_auto_priority_and_description(
        "weight products of up to 8 rows (decode) as a C++ kernel through the XLA FFI (CPU)"
    )
    register(
        name="cpu",
        loader="esurge_attention_cpu.matmul_backend:CPUMatmulBackend",
        capabilities=Capabilities.of(
            platforms=["cpu"], dtypes=["float32", "bfloat16"], auto_priority=priority
        ),
        description=description,
    )
