"""``esurge serve [MODEL] --host --port --api-key KEY``: the OpenAI-compatible server."""

from __future__ import annotations

import argparse

from esurge_core.frontends.engine_args import add_engine_arguments, engine_kwargs


class ServeFrontend:
    """Load a model and serve it over HTTP with OpenAI's API."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Server flags and the engine flags."""
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

    def run(self, args: argparse.Namespace) -> int:
        """Build the engine and serve until interrupted."""
        from esurge_core.engine.esurge import eSurge
        from esurge_server_openai.server import eSurgeApiServer

        keys = {key: {"label": f"cli-key-{index}"} for index, key in enumerate(args.api_key)}
        with eSurge(args.model, **engine_kwargs(args)) as engine:
            server = eSurgeApiServer(engine, require_api_key=bool(keys), api_keys=keys)
            server.fire(host=args.host, port=args.port, log_level=args.log_level)
        return 0
