"""eSurge core: hook specs, plugin manager, configuration, models, KV cache and engine.

Heavy parts (JAX, models, the engine) are imported lazily, so ``import esurge_core`` and
plugin discovery stay cheap and never initialise a JAX backend.
"""

from esurge_core.hookspecs import hookimpl
from esurge_core.version import __version__

__all__ = ["__version__", "hookimpl"]
