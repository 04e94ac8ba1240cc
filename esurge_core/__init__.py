"""eSurge core: hook specs, plugin manager, configuration, models, KV cache and engine.

``from esurge_core import eSurge, SamplingParams`` is the public entry point. Heavy parts
(JAX, models, the engine) are imported lazily on first attribute access, so
``import esurge_core`` and plugin discovery stay cheap and never initialise a JAX backend.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from esurge_core.hookspecs import hookimpl
from esurge_core.version import __version__

if TYPE_CHECKING:
    from esurge_core.engine.esurge import eSurge
    from esurge_core.engine.outputs import CompletionOutput, RequestOutput
    from esurge_core.sampling.params import SamplingParams

_LAZY = {
    "eSurge": "esurge_core.engine.esurge",
    "SamplingParams": "esurge_core.sampling.params",
    "RequestOutput": "esurge_core.engine.outputs",
    "CompletionOutput": "esurge_core.engine.outputs",
}

__all__ = [
    "CompletionOutput",
    "RequestOutput",
    "SamplingParams",
    "__version__",
    "eSurge",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'esurge_core' has no attribute {name!r}")
