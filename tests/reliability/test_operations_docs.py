"""docs/operations.md is the contract for server limits: every option is documented, and
every option is a flag of ``esurge serve``."""

from __future__ import annotations

from pathlib import Path

import pytest
from esurge_server_openai.cli import server_options
from esurge_server_openai.options import ServerOptions

from esurge_core.cli import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.mark.parametrize("name", sorted(ServerOptions.model_fields))
def test_every_server_option_is_documented(name):
    assert f"`{name}`" in DOCS.read_text(), f"docs/operations.md does not describe {name}"


def test_serve_flags_set_every_option_and_none_switches_a_limit_off():
    argv = ["serve", "m", "--max-queued-requests", "none", "--request-timeout-s", "2.5"]
    argv += ["--allow-client-chat-template", "--cors-allow-origin", "https://a.example"]
    options = server_options(build_parser(argv).parse_args(argv))
    assert options.max_queued_requests is None
    assert options.request_timeout_s == 2.5
    assert options.allow_client_chat_template is True
    assert options.cors_allow_origins == ("https://a.example",)
    assert options.max_body_bytes == ServerOptions().max_body_bytes
