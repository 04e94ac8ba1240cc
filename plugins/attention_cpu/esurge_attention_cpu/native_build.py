"""Compile the C++ kernels for this machine on first use and cache the shared library.

One library holds every kernel of the plugin (``SOURCES``, sharing ``parallel_for.h``). It
is built with the host compiler (``$CXX``, else ``c++``) against the XLA FFI
headers that ship with jaxlib, with ``-march=native`` so the inner loops use the widest vector
units of the CPU that runs them. The cache key covers the source, the flags, the jaxlib version
and the CPU model and flags, so a changed source, jaxlib upgrade or different machine builds a
fresh library; concurrent builders each write a temporary file and rename it into place.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from esurge_core.platform import cpu_signature

_HERE = Path(__file__).parent
SOURCES = (
    _HERE / "ragged_paged_attention.cc",
    _HERE / "small_matmul.cc",
    _HERE / "bf16_pair_matmul.cc",
    _HERE / "greedy_head.cc",
    _HERE / "residual_norm.cc",
)
# Every header the sources include (all of them are in this directory).
HEADERS = tuple(sorted(_HERE.glob("*.h")))
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
    "-std=c++20",
    "-shared",
    "-fPIC",
    "-pthread",
)


class NativeBuildError(RuntimeError):
    """The C++ kernels could not be compiled (no compiler, or the compiler failed)."""


def _cache_dir() -> Path:
    from esurge_core.packaged_models import cache_root

    return cache_root() / "native"


def library_path() -> Path:
    """Where the library for this source, compiler flags, jaxlib and CPU is (or will be)."""
    import jaxlib

    key = hashlib.sha256()
    for path in (*SOURCES, *HEADERS):
        key.update(path.read_bytes())
    key.update(" ".join(FLAGS).encode())
    key.update(jaxlib.__version__.encode())
    key.update(cpu_signature().encode())
    key.update(os.environ.get("CXX", "c++").encode())
    return _cache_dir() / f"esurge_cpu_kernels-{key.hexdigest()[:16]}.so"


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
        f"-I{_HERE}",
        *map(str, SOURCES),
        "-o",
        temporary,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        os.unlink(temporary)
        raise NativeBuildError(
            f"the cpu attention and matmul backends need a C++20 compiler to build their "
            f"kernels, and {compiler[0]!r} was not found; install g++ or clang++ (or set CXX), "
            "or choose attention='xla' and matmul='xla'"
        ) from exc
    if result.returncode != 0:
        os.unlink(temporary)
        raise NativeBuildError(
            f"compiling the cpu kernels failed (exit {result.returncode}): "
            f"{shlex.join(command)}\n{result.stderr[-4000:]}"
        )
    os.replace(temporary, target)
    return target
