"""Choosing a component by name: unknown names, unusable choices and 'auto'."""

from __future__ import annotations

import logging

import importlib_metadata
import pytest

from esurge_core.capabilities import Requirements
from esurge_core.components import ComponentKind
from esurge_core.errors import UnknownComponentError, UnusableComponentError
from esurge_core.plugin_manager import PluginManager

from .conftest import fake_entry_point

ATTN = ComponentKind.ATTENTION_BACKEND


@pytest.fixture
def registry():
    manager = PluginManager(environ={})
    installed = importlib_metadata.entry_points(group="esurge")
    manager._entry_points = [  # the installed xla backend plus a TPU-only test backend
        *(ep for ep in installed if ep.name == "attention_xla"),
        fake_entry_point("good_backend", "esurge-fancy", "2.0"),
    ]
    return manager.registry


def test_unknown_name_lists_every_installed_option_with_distribution_and_version(registry):
    with pytest.raises(UnknownComponentError) as excinfo:
        registry.select(ATTN, "flash", Requirements(platform="cpu"))
    message = str(excinfo.value)
    assert "'flash'" in message
    assert "xla (esurge-attention-xla 0.1.0)" in message
    assert "fancy (esurge-fancy 2.0)" in message


def test_unknown_first_party_name_says_what_to_pip_install(registry):
    # The fixture installs only xla and the test backend, as on a machine without triton.
    with pytest.raises(UnknownComponentError, match="pip install esurge-attention-triton"):
        registry.select(ATTN, "triton", Requirements(platform="gpu"))


def test_unusable_backend_error_lists_every_reason(registry):
    requirements = Requirements(platform="cpu", dtype="float32", head_dim=64, page_size=8)
    with pytest.raises(UnusableComponentError) as excinfo:
        registry.select(ATTN, "fancy", requirements)
    reasons = excinfo.value.reasons["fancy"]
    assert len(reasons) == 4
    message = str(excinfo.value)
    for fragment in ("platform 'cpu'", "dtype 'float32'", "head_dim 64", "page_size 8"):
        assert fragment in message
    assert "Usable instead: xla" in message


def test_auto_picks_the_highest_priority_usable_backend_for_the_platform(registry):
    tpu = Requirements(platform="tpu", dtype="bfloat16", head_dim=128, page_size=16)
    assert registry.select(ATTN, "auto", tpu).name == "fancy"
    assert registry.select(ATTN, "auto", Requirements(platform="cpu")).name == "xla"


def test_auto_falls_back_with_a_logged_reason(registry, caplog):
    tpu_fp32 = Requirements(platform="tpu", dtype="float32", head_dim=128, page_size=16)
    with caplog.at_level(logging.INFO, logger="esurge_core.registry"):
        assert registry.select(ATTN, "auto", tpu_fp32).name == "xla"
    assert "passed over 'fancy'" in caplog.text
    assert "dtype 'float32'" in caplog.text


def test_auto_with_nothing_usable_explains_every_candidate(registry):
    impossible = Requirements(platform="tpu", dtype="float32", patterns=frozenset({"exotic"}))
    with pytest.raises(UnusableComponentError) as excinfo:
        registry.select(ATTN, "auto", impossible)
    assert set(excinfo.value.reasons) == {"xla", "fancy"}
    assert "pip install esurge-attention-pallas" in str(excinfo.value)


def test_selection_does_not_import_the_backend_module(registry):
    import sys

    sys.modules.pop("tests.plugin_system.fake_plugins.fancy_kernel", None)
    registry.select(
        ATTN, "auto", Requirements(platform="tpu", dtype="bfloat16", head_dim=128, page_size=16)
    )
    assert "tests.plugin_system.fake_plugins.fancy_kernel" not in sys.modules
    backend = registry.get(ATTN, "fancy").load()
    assert backend.name == "fancy"
