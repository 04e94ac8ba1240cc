"""``esurge generate`` on the default packaged model."""

from __future__ import annotations

import pytest

from esurge_core.cli import main

pytestmark = pytest.mark.slow


def test_generate_prints_the_completion(capsys):
    args = ["generate", "The capital of France is", "--max-tokens", "4", "--max-model-len", "256"]
    assert main([*args, "--kv-cache-memory", str(64 << 20)]) == 0
    assert "Paris" in capsys.readouterr().out


def test_generate_streams_a_single_prompt(capsys):
    args = ["generate", "The capital of France is", "--max-tokens", "4", "--stream"]
    assert main([*args, "--max-model-len", "256", "--kv-cache-memory", str(64 << 20)]) == 0
    assert "Paris" in capsys.readouterr().out


def test_frontends_are_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "generate" in out and "chat" in out
