"""Entry point: declares the ``esurge serve`` frontend by import path."""

from __future__ import annotations

from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import FrontendRegistrar


@hookimpl
def esurge_register_frontends(register: FrontendRegistrar) -> None:
    """Register ``serve``."""
    register(
        name="serve",
        loader="esurge_server_openai.cli:ServeFrontend",
        description="OpenAI-compatible HTTP server (chat, completions, models, tokenize)",
    )
