"""glibc malloc settings that keep the memory XLA's CPU runtime frees after every step.

XLA:CPU allocates each executable's temporary buffer (tens of MB for a batched decode step)
and the step's outputs with ``malloc`` and frees them when the step ends. With glibc's
defaults, blocks from 32 MiB down (the dynamic mmap threshold) come from ``mmap`` and go back
with ``munmap``, and freed heap tops are trimmed, so the next step faults the same memory in
again page by page: about 15,000 page faults per call of a jitted function holding 90 decode-
sized products, a tenth of a batch-64 decode step (docs/PERFORMANCE.md, step 13).

The settings below make such blocks come from the heap and stay there once freed. glibc reads
them only when a process starts (``mallopt`` caps the mmap threshold at 32 MiB), so the
``esurge`` command and the benchmarks re-execute themselves once with them set
(:func:`reexec_with_tuned_malloc`); an application that embeds the engine can set the same
variables in the environment that starts it. The cost: memory freed by the process is kept
for reuse instead of being returned to the kernel, so its resident size stays near its peak.
``ESURGE_TUNE_MALLOC=0`` turns the re-execution off; variables already set are left as they
are.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

__all__ = [
    "OPT_OUT_VARIABLE",
    "TUNED_MALLOC_ENV",
    "malloc_is_tuned",
    "reexec_with_tuned_malloc",
    "tuned_malloc_env",
]

#: glibc's environment aliases of its malloc tunables, and the values eSurge starts with.
TUNED_MALLOC_ENV: dict[str, str] = {
    # Blocks below 1 GiB come from the heap, not from mmap (the KV cache stays mapped).
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    # Freed memory at the top of a heap is kept up to 4 GiB instead of 128 KiB.
    "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
    # Each heap extension asks for 256 MiB more than it needs (touched only when used).
    "MALLOC_TOP_PAD_": str(256 << 20),
}

#: Set to ``0`` to start without the settings.
OPT_OUT_VARIABLE = "ESURGE_TUNE_MALLOC"

# Set in the re-executed process, so it never re-executes twice.
_DONE_MARKER = "ESURGE_MALLOC_TUNED"


def tuned_malloc_env(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute with, or ``None`` where there is nothing to do.

    ``None`` when the C library is not glibc, when ``ESURGE_TUNE_MALLOC=0``, when this process
    already is the re-executed one, or when every variable is already set. Variables the
    caller set keep their values.
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT_VARIABLE, "1").strip() == "0" or environ.get(_DONE_MARKER):
        return None
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    missing = {key: value for key, value in TUNED_MALLOC_ENV.items() if key not in environ}
    if not missing:
        return None
    return {**environ, **missing, _DONE_MARKER: "1"}


def malloc_is_tuned(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process started with every variable of :data:`TUNED_MALLOC_ENV` set."""
    environ = os.environ if environ is None else environ
    return all(key in environ for key in TUNED_MALLOC_ENV)


def reexec_with_tuned_malloc() -> None:
    """Replace this process by the same command started with :data:`TUNED_MALLOC_ENV`.

    Call it first thing in a command's entry point, before threads or open resources exist;
    returns without doing anything where :func:`tuned_malloc_env` says so.
    """
    environ = tuned_malloc_env()
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), environ)
