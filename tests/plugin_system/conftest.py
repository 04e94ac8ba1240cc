"""Fixtures that build plugin managers from fake entry points."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import pytest

from esurge_core.plugin_manager import PluginManager


@dataclass
class FakeDistribution:
    name: str
    version: str = "1.0.0"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metadata = {"Name": self.name}


@dataclass
class FakeEntryPoint:
    """Quacks like importlib_metadata.EntryPoint for the manager."""

    name: str
    value: str
    dist: FakeDistribution

    def load(self):
        return importlib.import_module(self.value)


def fake_entry_point(module: str, distribution: str, version: str = "1.0.0") -> FakeEntryPoint:
    return FakeEntryPoint(
        name=module,
        value=f"tests.plugin_system.fake_plugins.{module}",
        dist=FakeDistribution(distribution, version),
    )


@pytest.fixture
def make_manager():
    """``make_manager(entry_points, **environ)`` -> a loaded PluginManager."""

    def make(entry_points, **environ: str) -> PluginManager:
        return PluginManager(entry_points=entry_points, environ=environ).load()

    return make
