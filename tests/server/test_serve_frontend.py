"""``esurge serve`` is registered by the distribution's entry point and parses its flags."""

from __future__ import annotations

from esurge_server_openai.cli import ServeFrontend

from esurge_core.cli import build_parser
from esurge_core.components import ComponentKind
from esurge_core.frontend import Frontend
from esurge_core.plugin_manager import get_plugin_manager


def test_serve_frontend_is_registered_through_the_entry_point():
    spec = get_plugin_manager().registry.get(ComponentKind.FRONTEND, "serve")
    assert spec.load() is ServeFrontend
    assert isinstance(ServeFrontend(), Frontend)


def test_serve_parses_model_host_port_keys_and_engine_flags():
    argv = ["serve", "my-model", "--port", "9000", "--api-key", "a", "--api-key", "b"]
    argv += ["--max-model-len", "256"]
    args = build_parser(argv).parse_args(argv)
    assert (args.model, args.host, args.port) == ("my-model", "127.0.0.1", 9000)
    assert args.api_key == ["a", "b"]
    assert args.max_model_len == 256
