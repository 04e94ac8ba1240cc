"""Compiled steps kept on disk, so a restart with the same model and settings compiles nothing.

The engine points JAX's persistent compilation cache at a folder of this machine,
``$ESURGE_CACHE/xla/<key>`` (default ``~/.cache/esurge/xla``), unless the process already
chose a folder (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``), which is then used as it is.
JAX keys each entry by the computation, its compile options, the XLA flags and the jaxlib
version; the folder's key adds the host CPU's model and features, because XLA:CPU compiles for
the CPU it runs on, so a cache folder shared between machines never hands one CPU another's
code. Executables that compile in less than ``MIN_COMPILE_SECONDS`` are not written, and the
folder is held to ``MAX_CACHE_BYTES`` by evicting the least recently used entries; with that
limit set, JAX reads and writes entries under a file lock, so processes sharing the folder
never read an entry another is still writing.

JAX's setting is process-wide: once an engine has set it, every later compilation of the
process reads and writes that folder. The folder holds code the process will run: like any
cache of compiled code, it must not be writable by anyone the process should not trust (it is
created readable by its owner only).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from esurge_core.packaged_models import cache_root
from esurge_core.platform import cpu_signature

__all__ = ["MAX_CACHE_BYTES", "MIN_COMPILE_SECONDS", "machine_cache_dir", "use_compilation_cache"]

logger = logging.getLogger(__name__)

#: Compilations shorter than this are not written (JAX's default, 1 s, would skip steps of
#: small models: SmolLM2's compile in 1.0-1.1 s on the 2-core Zen 4 kind; the helper jits of
#: loading compile in milliseconds and are not worth a file each).
MIN_COMPILE_SECONDS = 0.2
#: The folder's size limit (SmolLM2's 30 buckets take 4.3 MB).
MAX_CACHE_BYTES = 2 << 30


def machine_cache_dir() -> Path:
    """The folder this machine's compiled steps are kept in (not created)."""
    import jaxlib

    key = hashlib.sha256(f"{cpu_signature()}\njaxlib {jaxlib.__version__}".encode())
    return cache_root() / "xla" / key.hexdigest()[:16]


def use_compilation_cache() -> Path:
    """Point JAX's persistent compilation cache at ``machine_cache_dir()`` unless the process
    already set a folder; return the folder in use."""
    import jax

    chosen = jax.config.jax_compilation_cache_dir
    if chosen:
        return Path(chosen)
    folder = machine_cache_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
    logger.info("compiled steps are cached in %s", folder)
    return folder
