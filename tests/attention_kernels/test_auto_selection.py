"""``attention="auto"`` with the Pallas, Triton and CPU backends installed next to ``xla``.

``ESURGE_PLATFORM`` fakes the platform, so TPU and GPU selection is checked on a CPU machine.
"""

from __future__ import annotations

import logging

import pytest

from esurge_core.capabilities import Requirements
from esurge_core.components import ComponentKind
from esurge_core.platform import current_platform
from esurge_core.plugin_manager import PluginManager

ATTN = ComponentKind.ATTENTION_BACKEND
PATTERNS = frozenset({"full", "sliding_window"})


def _select_auto(monkeypatch, platform: str, **requirements) -> str:
    monkeypatch.setenv("ESURGE_PLATFORM", platform)
    registry = PluginManager().registry
    wanted = {"dtype": "bfloat16", "head_dim": 128, "page_size": 16, "patterns": PATTERNS}
    wanted.update(requirements)
    return registry.select(ATTN, "auto", Requirements(platform=current_platform(), **wanted)).name


@pytest.mark.parametrize(
    ("platform", "expected"), [("tpu", "pallas"), ("gpu", "triton"), ("cpu", "cpu")]
)
def test_auto_picks_the_platforms_kernel(monkeypatch, platform, expected):
    assert _select_auto(monkeypatch, platform) == expected


def test_auto_on_tpu_falls_back_to_xla_for_an_unsupported_head_dim_and_logs_why(
    monkeypatch, caplog
):
    with caplog.at_level(logging.INFO, logger="esurge_core.registry"):
        assert _select_auto(monkeypatch, "tpu", head_dim=96) == "xla"
    assert "passed over 'pallas' (head_dim 96 is not supported" in caplog.text


def test_auto_on_gpu_falls_back_to_xla_for_a_page_size_triton_cannot_tile(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="esurge_core.registry"):
        assert _select_auto(monkeypatch, "gpu", page_size=8) == "xla"
    assert "passed over 'triton' (page_size 8 is not a multiple of 16)" in caplog.text


@pytest.mark.parametrize(("name", "platform"), [("pallas", "tpu"), ("triton", "gpu")])
def test_loaded_backend_interprets_off_its_platform(name, platform):
    backend = PluginManager().registry.get(ATTN, name).load()()
    assert backend.name == name
    assert backend._interpret() is True  # this CI machine is a CPU


def test_auto_on_cpu_skips_the_native_kernel_without_a_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert _select_auto(monkeypatch, "cpu", dtype="float32", head_dim=64) == "xla"
