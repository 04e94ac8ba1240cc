"""The ``esurge`` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from esurge_core.cli import main


def test_plugins_command_lists_plugins_and_components_with_usability(capsys):
    assert main(["plugins", "--platform", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "esurge-attention-xla" in out
    assert "esurge-shortest-first" in out
    assert "shortest_first" in out
    assert "USABLE ON CPU" in out
    xla_row = next(
        line
        for line in out.splitlines()
        if line.startswith("attention_backend") and " xla " in line
    )
    assert xla_row.rstrip().endswith("yes")


def test_version_command_prints_core_and_plugin_versions(capsys):
    assert main(["version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("esurge-core 0.1.0")
    assert "esurge-attention-xla 0.1.0" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "plugins" in capsys.readouterr().out


def test_console_script_is_installed_and_runs():
    executable = Path(sys.executable).parent / "esurge"
    assert executable.exists(), "the esurge console script is not installed beside python"
    result = subprocess.run(
        [executable, "plugins", "--platform", "cpu"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "kv_cache_allocator" in result.stdout
