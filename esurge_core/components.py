"""Registered components: a name, a lazy loader and what the component can serve.

A plugin never hands over a loaded object. It hands over an import path
(``"package.module:attribute"``), so that discovering plugins imports no kernel module,
initialises no JAX backend and touches no device. The object is imported only when a
configuration selects it (``ComponentSpec.load``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from esurge_core.capabilities import Capabilities, Requirements
from esurge_core.errors import PluginError


class ComponentKind(StrEnum):
    """The kinds of extension eSurge has, one hook each (see ``hookspecs``)."""

    ATTENTION_BACKEND = "attention_backend"
    MATMUL_BACKEND = "matmul_backend"
    KV_CACHE_ALLOCATOR = "kv_cache_allocator"
    SCHEDULER = "scheduler"
    SAMPLER = "sampler"
    FRONTEND = "frontend"
    MODEL = "model"
    TOOL_PARSER = "tool_parser"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a component comes from: the distribution that registered it."""

    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """One registered component.

    Attributes:
        kind: which kind of extension this is.
        name: the name users select it by in config (e.g. ``"xla"``, ``"fcfs"``).
        loader: ``"module:attribute"`` import path of the implementation, imported lazily.
        origin: the distribution (and version) that registered it.
        description: one line for ``esurge plugins``.
        capabilities: what it can serve; ``None`` means it has no restrictions.
    """

    kind: ComponentKind
    name: str
    loader: str
    origin: Origin
    description: str = ""
    capabilities: Capabilities | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def unmet(self, requirements: Requirements) -> list[str]:
        """Every reason this component cannot serve ``requirements`` (empty: usable)."""
        return [] if self.capabilities is None else self.capabilities.unmet(requirements)

    def auto_priority(self, platform: str | None) -> int | None:
        """How much ``"auto"`` prefers this component on ``platform`` (``None``: never)."""
        if self.capabilities is None or platform is None:
            return None
        return self.capabilities.auto_priority.get(platform)

    def load(self) -> Any:
        """Import the implementation named by ``loader`` and return it."""
        module_name, _, attribute = self.loader.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attribute) if attribute else module
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{self.kind} {self.name!r} from {self.origin} could not be loaded from "
                f"{self.loader!r}: {exc}. Reinstall {self.origin.distribution}."
            ) from exc


def validate_loader_path(loader: str) -> str:
    """Check that ``loader`` looks like ``"package.module:attribute"`` and return it."""
    module_name, sep, attribute = loader.partition(":")
    if not module_name or not sep or not attribute or not attribute.isidentifier():
        raise PluginError(
            f"loader {loader!r} is not an import path of the form 'package.module:attribute'"
        )
    return loader
