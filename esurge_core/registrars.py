"""Typed registrars: the ``register`` objects each hook receives.

One class per kind of extension, each with a ``__call__`` whose keyword arguments say exactly
what that kind needs. They all funnel into ``ComponentRegistry.add`` with the origin (the
distribution of the plugin being called) filled in by the plugin manager, so a plugin cannot
misreport where a component comes from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esurge_core.capabilities import Capabilities
from esurge_core.components import ComponentKind, ComponentSpec, Origin, validate_loader_path
from esurge_core.errors import PluginError

if TYPE_CHECKING:
    from esurge_core.registry import ComponentRegistry


class _Registrar:
    kind: ComponentKind

    def __init__(self, registry: ComponentRegistry, origin: Origin) -> None:
        self._registry = registry
        self._origin = origin

    def _add(
        self,
        name: str,
        loader: str,
        description: str,
        capabilities: Capabilities | None = None,
        **extra: object,
    ) -> None:
        if not isinstance(name, str) or not name or not name.replace("-", "_").isidentifier():
            raise PluginError(
                f"{self._origin.distribution} registered a {self.kind} with invalid name {name!r}; "
                "names are non-empty identifiers (letters, digits, '_' or '-')"
            )
        spec = ComponentSpec(
            kind=self.kind,
            name=name,
            loader=validate_loader_path(loader),
            origin=self._origin,
            description=description,
            capabilities=capabilities,
            extra=dict(extra),
        )
        self._registry.add(spec)


class _BackendRegistrar(_Registrar):
    """A compute backend: registered with the capabilities that decide where it can serve."""

    def __call__(
        self, *, name: str, loader: str, capabilities: Capabilities, description: str = ""
    ) -> None:
        """Register backend ``name``; ``loader`` points at its factory."""
        self._add(name, loader, description, capabilities)


class AttentionBackendRegistrar(_BackendRegistrar):
    """Registers ragged paged attention backends (selected by ``attention=`` in config); the
    loader points at an ``AttentionBackend`` factory."""

    kind = ComponentKind.ATTENTION_BACKEND


class MatmulBackendRegistrar(_BackendRegistrar):
    """Registers matmul backends for the models' weight products (selected by ``matmul=``);
    the loader points at a ``MatmulBackend`` factory."""

    kind = ComponentKind.MATMUL_BACKEND


class KVCacheAllocatorRegistrar(_Registrar):
    """Registers KV-cache page allocators (selected by ``kv_cache_allocator=``)."""

    kind = ComponentKind.KV_CACHE_ALLOCATOR

    def __call__(self, *, name: str, loader: str, description: str = "") -> None:
        """Register allocator ``name``; ``loader`` points at its manager class."""
        self._add(name, loader, description)


class SchedulerRegistrar(_Registrar):
    """Registers scheduling policies (selected by ``scheduler=``)."""

    kind = ComponentKind.SCHEDULER

    def __call__(self, *, name: str, loader: str, description: str = "") -> None:
        """Register policy ``name``; ``loader`` points at a ``SchedulingPolicy`` class."""
        self._add(name, loader, description)


class SamplerRegistrar(_Registrar):
    """Registers token samplers (selected by ``sampler=``)."""

    kind = ComponentKind.SAMPLER

    def __call__(self, *, name: str, loader: str, description: str = "") -> None:
        """Register sampler ``name``; ``loader`` points at its sampling function factory."""
        self._add(name, loader, description)


class FrontendRegistrar(_Registrar):
    """Registers frontends: ways to drive the engine, each an ``esurge`` sub-command."""

    kind = ComponentKind.FRONTEND

    def __call__(self, *, name: str, loader: str, description: str = "") -> None:
        """Register frontend ``name`` (also the CLI sub-command name).

        ``loader`` points at a ``Frontend`` class with ``add_arguments(parser)`` and
        ``run(args) -> int``.
        """
        self._add(name, loader, description)


class ModelRegistrar(_Registrar):
    """Registers model architectures, keyed by the ``architectures`` field of a config."""

    kind = ComponentKind.MODEL

    def __call__(self, *, architecture: str, loader: str, description: str = "") -> None:
        """Register ``architecture`` (e.g. ``"LlamaForCausalLM"``); ``loader`` builds it."""
        self._add(architecture, loader, description)


class ToolParserRegistrar(_Registrar):
    """Registers parsers that turn model output into OpenAI ``tool_calls``."""

    kind = ComponentKind.TOOL_PARSER

    def __call__(self, *, name: str, loader: str, description: str = "") -> None:
        """Register tool-call parser ``name``; ``loader`` points at its parser class."""
        self._add(name, loader, description)


#: The registrar class for each kind, used by the plugin manager.
REGISTRARS: dict[ComponentKind, type[_Registrar]] = {
    cls.kind: cls
    for cls in (
        AttentionBackendRegistrar,
        MatmulBackendRegistrar,
        KVCacheAllocatorRegistrar,
        SchedulerRegistrar,
        SamplerRegistrar,
        FrontendRegistrar,
        ModelRegistrar,
        ToolParserRegistrar,
    )
}
