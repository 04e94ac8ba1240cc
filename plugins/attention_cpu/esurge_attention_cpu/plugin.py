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


@hookimpl
def esurge_register_attention_backends(register: AttentionBackendRegistrar) -> None:
    """Register ``cpu``: the fastest backend on CPU, so ``auto`` prefers it there.

    Without a C++ compiler the kernel cannot be built, so ``auto`` leaves it out (and picks
    ``xla``); naming it explicitly then fails with the build error, which says what to install.
    """
    usable = compiler_available()
    register(
        name="cpu",
        loader="esurge_attention_cpu.backend:CPUAttentionBackend",
        capabilities=Capabilities.of(
            platforms=["cpu"],
            dtypes=["float32", "bfloat16"],
            patterns=["full", "sliding_window", "chunked"],
            soft_cap=True,
            auto_priority={"cpu": 200} if usable else {},
        ),
        description=(
            "ragged paged attention as a C++ kernel through the XLA FFI (CPU)"
            if usable
            else "ragged paged attention in C++ (CPU); no C++ compiler found, so not in 'auto'"
        ),
    )


@hookimpl
def esurge_register_matmul_backends(register: MatmulBackendRegistrar) -> None:
    """Register ``cpu``: decode-sized weight products in C++, preferred by ``auto`` on CPU.

    Like the attention backend, ``auto`` leaves it out where no C++ compiler exists.
    """
    usable = compiler_available()
    register(
        name="cpu",
        loader="esurge_attention_cpu.matmul_backend:CPUMatmulBackend",
        capabilities=Capabilities.of(
            platforms=["cpu"],
            dtypes=["float32", "bfloat16"],
            auto_priority={"cpu": 200} if usable else {},
        ),
        description=(
            "weight products of up to 64 rows (decode) as a C++ kernel through the XLA FFI"
            if usable
            else "weight products in C++ (CPU); no C++ compiler found, so not in 'auto'"
        ),
    )
