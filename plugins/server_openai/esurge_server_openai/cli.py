"""``esurge serve [MODEL] --host --port --api-key KEY``: the OpenAI-compatible server.

Every ``ServerOptions`` field is a flag (``--max-body-bytes``, ``--max-queued-requests``,
``--request-timeout-s``, ``--drain-timeout-s``, ...); the command exits 0 after a signal and
its drain, 1 when the engine loop died.
"""

from __future__ import annotations

import argparse
from typing import Any

from esurge_core.frontends.engine_args import add_engine_arguments, engine_kwargs


def _option_flags() -> list[tuple[str, Any]]:
    from esurge_server_openai.options import ServerOptions

    return list(ServerOptions.model_fields.items())


class ServeFrontend:
    """Load a model and serve it over HTTP with OpenAI's API."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Server flags, the limits of ``ServerOptions`` and the engine flags."""
        add_engine_arguments(parser, positional_model=True)
        parser.add_argument("--host", default="127.0.0.1", help="bind address")
        parser.add_argument("--port", type=int, default=8000, help="bind port")
        parser.add_argument(
            "--api-key",
            action="append",
            default=[],
            metavar="KEY",
            help="accept this key (repeatable); giving one makes a key required",
        )
        parser.add_argument("--log-level", default="info", help="uvicorn log level")
        limits = parser.add_argument_group("server limits (docs/operations.md)")
        for name, field in _option_flags():
            flag = "--" + name.replace("_", "-")
            help_text = f"{field.description} (default: {field.default})"
            if field.annotation is bool:
                limits.add_argument(flag, action="store_true", default=None, help=help_text)
            elif name == "cors_allow_origins":
                limits.add_argument(
                    "--cors-allow-origin",
                    dest=name,
                    action="append",
                    default=None,
                    metavar="ORIGIN",
                    help=help_text,
                )
            elif field.annotation is str:
                limits.add_argument(flag, default=None, help=help_text)
            else:
                limits.add_argument(flag, type=_parse_number, default=None, help=help_text)

    def run(self, args: argparse.Namespace) -> int:
        """Build the engine and serve until a signal (exit 0) or engine death (exit 1)."""
        from esurge_core.engine.esurge import eSurge
        from esurge_server_openai.server import eSurgeApiServer

        options = server_options(args)
        keys = {key: {"label": f"cli-key-{index}"} for index, key in enumerate(args.api_key)}
        with eSurge(args.model, **engine_kwargs(args)) as engine:
            server = eSurgeApiServer(
                engine, require_api_key=bool(keys), api_keys=keys, options=options
            )
            return server.fire(host=args.host, port=args.port, log_level=args.log_level)


def server_options(args: argparse.Namespace) -> Any:
    """The ``ServerOptions`` the flags set (unset flags keep the defaults, ``none`` = off)."""
    from esurge_server_openai.options import ServerOptions

    given = {
        name: None if getattr(args, name) == OFF else getattr(args, name)
        for name, _ in _option_flags()
        if getattr(args, name, None) is not None
    }
    if "cors_allow_origins" in given:
        given["cors_allow_origins"] = tuple(given["cors_allow_origins"])
    return ServerOptions(**given)


#: What ``--flag none`` parses to: the limit is switched off.
OFF = "none"


def _parse_number(text: str) -> int | float | str:
    """``none`` switches a limit off (``OFF``); otherwise an int or a float."""
    if text.lower() == OFF:
        return OFF
    try:
        return int(text)
    except ValueError:
        return float(text)
