"""Compile the C++ kernel for this machine on first use and cache the shared library.

The library is built with the host compiler (``$CXX``, else ``c++``) against the XLA FFI
headers that ship with jaxlib, with ``-march=native`` so the inner loops use the widest vector
units of the CPU that runs them. The cache key covers the source, the flags, the jaxlib version
and the CPU model and flags, so a changed source, jaxlib upgrade or different machine builds a
fresh library; concurrent builders each write a temporary file and rename it into place.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("ragged_paged_attention.cc")
# Not -ffast-math: linking a shared library with it (GCC < 13) pulls in crtfastmath.o, which
# sets flush-to-zero / denormals-are-zero for the whole process at load time. The flags below
# allow the same reassociation (vectorised reductions) without touching global FP state.
FLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-freciprocal-math",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-pthread",
)


class NativeBuildError(RuntimeError):
    """The C++ kernel could not be compiled (no compiler, or the compiler failed)."""


def _cpu_signature() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _cache_dir() -> Path:
    from esurge_core.packaged_models import cache_root

    return cache_root() / "native"


def library_path() -> Path:
    """Where the library for this source, compiler flags, jaxlib and CPU is (or will be)."""
    import jaxlib

    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), jaxlib.__version__.encode()):
        key.update(part)
    key.update(_cpu_signature().encode())
    key.update(os.environ.get("CXX", "c++").encode())
    return _cache_dir() / f"esurge_ragged_paged_attention-{key.hexdigest()[:16]}.so"


def build_library() -> Path:
    """Return the compiled library, compiling it first if this machine has none yet.

    Raises:
        NativeBuildError: no C++ compiler, or compilation failed (the message has its output).
    """
    target = library_path()
    if target.exists():
        return target
    import jax.ffi

    compiler = shlex.split(os.environ.get("CXX", "c++"))
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    command = [
        *compiler,
        *FLAGS,
        f"-I{jax.ffi.include_dir()}",
        str(SOURCE),
        "-o",
        temporary,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        os.unlink(temporary)
        raise NativeBuildError(
            f"the cpu attention backend needs a C++17 compiler to build its kernel, and "
            f"{compiler[0]!r} was not found; install g++ or clang++ (or set CXX), or choose "
            "attention_backend='xla'"
        ) from exc
    if result.returncode != 0:
        os.unlink(temporary)
        raise NativeBuildError(
            f"compiling the cpu attention kernel failed (exit {result.returncode}): "
            f"{shlex.join(command)}\n{result.stderr[-4000:]}"
        )
    os.replace(temporary, target)
    return target
