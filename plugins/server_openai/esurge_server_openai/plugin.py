"""Entry point: declares the ``esurge serve`` frontend by import path."""

from __future__ import annotations

from esurge_core.hookspecs import hookimpl
from esurge_core.registrars import FrontendRegistrar, ToolParserRegistrar


@hookimpl
def esurge_register_frontends(register: FrontendRegistrar) -> None:
    """Register ``serve``."""
    register(
        name="serve",
        loader="esurge_server_openai.cli:ServeFrontend",
        description="OpenAI-compatible HTTP server (chat, completions, models, tokenize)",
    )


@hookimpl
def esurge_register_tool_parsers(register: ToolParserRegistrar) -> None:
    """Register ``hermes`` and ``json`` (``esurge serve --tool-call-parser``)."""
    register(
        name="hermes",
        loader="esurge_server_openai.tool_calls:HermesToolParser",
        description="<tool_call>{json}</tool_call> blocks (Qwen, Hermes, SmolLM2 templates)",
    )
    register(
        name="json",
        loader="esurge_server_openai.tool_calls:JsonToolParser",
        description="the whole answer is a JSON call object or a list of them",
    )
