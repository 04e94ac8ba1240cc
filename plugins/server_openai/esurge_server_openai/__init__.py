"""eSurge's OpenAI-compatible HTTP server (``esurge serve``).

``eSurgeApiServer`` is imported on first use, so that plugin discovery (which imports
``esurge_server_openai.plugin``) stays free of FastAPI and JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from esurge_server_openai.server import eSurgeApiServer

__all__ = ["eSurgeApiServer"]


def __getattr__(name: str) -> Any:
    if name == "eSurgeApiServer":
        from esurge_server_openai.server import eSurgeApiServer

        return eSurgeApiServer
    raise AttributeError(f"module 'esurge_server_openai' has no attribute {name!r}")
