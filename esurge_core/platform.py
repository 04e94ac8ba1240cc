"""Which accelerator platform eSurge runs on (asked of JAX only when needed), and which CPU.

``ESURGE_PLATFORM`` overrides the answer (used by tests to check backend selection for TPU and
GPU on a CPU-only machine, and by operators who want to pin a platform).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

KNOWN_PLATFORMS = ("cpu", "gpu", "tpu")


def current_platform() -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"``: ``ESURGE_PLATFORM`` or JAX's default backend.

    Importing this module does not import JAX; calling this function initialises JAX's
    default backend unless ``ESURGE_PLATFORM`` is set.
    """
    forced = os.environ.get("ESURGE_PLATFORM", "").strip().lower()
    if forced:
        if forced not in KNOWN_PLATFORMS:
            raise ValueError(
                f"ESURGE_PLATFORM = {forced!r} is not a platform; use one of {KNOWN_PLATFORMS}"
            )
        return forced
    import jax

    backend = jax.default_backend()
    return "gpu" if backend in {"gpu", "cuda", "rocm"} else backend


def cpu_signature() -> str:
    """The host CPU's model name and feature flags (``/proc/cpuinfo``; elsewhere
    ``platform.processor()``): code compiled for this CPU (``-march=native``, XLA:CPU) runs
    on another CPU with the same signature, so caches of compiled code are keyed by it."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))
