"""Discovers, loads and calls eSurge plugins.

Order of loading (once per process, idempotent):

1. the core's own defaults (``esurge_core.builtin_plugin``), registered exactly like a
   third-party plugin but not subject to the allow-list;
2. every entry point of the ``esurge`` group, sorted by distribution and entry-point name,
   filtered by the environment:

   * ``ESURGE_PLUGINS``: comma-separated allow-list of entry-point or distribution names;
     set but empty means *no* entry-point plugins;
   * ``ESURGE_DISABLE_PLUGINS``: comma-separated block-list (same matching);
   * ``ESURGE_STRICT_PLUGINS=1``: a plugin that fails to load re-raises instead of being
     skipped with a warning (for CI).

Each entry point is loaded in its own ``try``/``except``: a broken plugin logs a warning that
names its distribution and version, and the rest carry on. ``check_pending`` makes a misspelt
hook name fail loudly. Each hook implementation is called with a registrar bound to its own
distribution, so the registry knows where every component comes from.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType

import importlib_metadata
import pluggy

from esurge_core import hookspecs
from esurge_core.components import ComponentKind, Origin
from esurge_core.errors import PluginError
from esurge_core.registrars import REGISTRARS
from esurge_core.registry import ComponentRegistry
from esurge_core.version import __version__

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "esurge"
CORE_DISTRIBUTION = "esurge-core"

#: Which hook fills which kind of component.
HOOK_KINDS: dict[str, ComponentKind] = {
    "esurge_register_attention_backends": ComponentKind.ATTENTION_BACKEND,
    "esurge_register_matmul_backends": ComponentKind.MATMUL_BACKEND,
    "esurge_register_kv_cache_allocators": ComponentKind.KV_CACHE_ALLOCATOR,
    "esurge_register_schedulers": ComponentKind.SCHEDULER,
    "esurge_register_samplers": ComponentKind.SAMPLER,
    "esurge_register_frontends": ComponentKind.FRONTEND,
    "esurge_register_models": ComponentKind.MODEL,
    "esurge_register_tool_parsers": ComponentKind.TOOL_PARSER,
}


@dataclass(frozen=True, slots=True)
class PluginRecord:
    """What happened to one plugin: loaded, skipped by configuration, or failed."""

    name: str
    distribution: str
    version: str
    status: str  # "loaded", "disabled", "not allowed", "failed"
    detail: str = ""


def _split_env(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {_normalise(part) for part in value.split(",") if part.strip()}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class PluginManager:
    """A typed facade over pluggy: load plugins once, then read the registry.

    Args:
        entry_points: the entry points to consider; defaults to the installed ``esurge``
            group (tests pass their own).
        environ: where to read ``ESURGE_*`` settings; defaults to ``os.environ``.
    """

    def __init__(
        self,
        entry_points: Iterable[importlib_metadata.EntryPoint] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._entry_points = entry_points
        self._environ = os.environ if environ is None else environ
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._origins: dict[str, Origin] = {}
        self._records: list[PluginRecord] = []
        self._registry = ComponentRegistry()
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def strict(self) -> bool:
        """Whether a failing plugin re-raises (``ESURGE_STRICT_PLUGINS=1``)."""
        return self._environ.get("ESURGE_STRICT_PLUGINS", "").strip() in {"1", "true", "yes"}

    def load(self) -> PluginManager:
        """Load every plugin once; later calls do nothing. Returns ``self``."""
        with self._lock:
            if self._loaded:
                return self
            from esurge_core import builtin_plugin

            self._add_plugin(
                builtin_plugin, "builtin", Origin(CORE_DISTRIBUTION, __version__), "builtin"
            )
            for entry_point in self._discover():
                self._load_entry_point(entry_point)
            self._loaded = True
            return self

    @property
    def registry(self) -> ComponentRegistry:
        """The registry of every component, loading plugins first if needed."""
        self.load()
        return self._registry

    @property
    def records(self) -> list[PluginRecord]:
        """One record per plugin considered, in load order."""
        self.load()
        return list(self._records)

    def _discover(self) -> list[importlib_metadata.EntryPoint]:
        entry_points = (
            list(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP))
            if self._entry_points is None
            else list(self._entry_points)
        )
        unique: dict[tuple[str, str], importlib_metadata.EntryPoint] = {}
        for entry_point in entry_points:
            unique.setdefault(
                (self._distribution_of(entry_point)[0], entry_point.name), entry_point
            )
        return [unique[key] for key in sorted(unique)]

    @staticmethod
    def _distribution_of(entry_point: importlib_metadata.EntryPoint) -> tuple[str, str]:
        dist = entry_point.dist
        if dist is None:
            return ("unknown", "unknown")
        return (dist.metadata["Name"] or dist.name, dist.version)

    def _load_entry_point(self, entry_point: importlib_metadata.EntryPoint) -> None:
        distribution, version = self._distribution_of(entry_point)
        names = {_normalise(entry_point.name), _normalise(distribution)}
        allowed = _split_env(self._environ.get("ESURGE_PLUGINS"))
        blocked = _split_env(self._environ.get("ESURGE_DISABLE_PLUGINS")) or set()
        if allowed is not None and not names & allowed:
            self._records.append(
                PluginRecord(
                    entry_point.name, distribution, version, "not allowed", "ESURGE_PLUGINS"
                )
            )
            return
        if names & blocked:
            self._records.append(
                PluginRecord(
                    entry_point.name, distribution, version, "disabled", "ESURGE_DISABLE_PLUGINS"
                )
            )
            return
        try:
            module = entry_point.load()
            self._add_plugin(
                module, entry_point.name, Origin(distribution, version), entry_point.name
            )
        except Exception as exc:
            self._fail(entry_point.name, Origin(distribution, version), exc)

    def _add_plugin(self, module: ModuleType, name: str, origin: Origin, record_name: str) -> None:
        plugin_name = f"{origin.distribution}:{name}"
        self._pm.register(module, name=plugin_name)
        self._origins[plugin_name] = origin
        try:
            self._check_hook_names(plugin_name)
            self._call_registration_hooks(plugin_name)
        except Exception:
            self._pm.unregister(name=plugin_name)
            self._registry.remove_origin(origin.distribution)
            raise
        self._records.append(
            PluginRecord(record_name, origin.distribution, origin.version, "loaded")
        )

    def _check_hook_names(self, plugin_name: str) -> None:
        """Fail loudly on hook implementations that match no specification (a typo)."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {plugin_name} implements a hook eSurge does not define: {exc}. "
                f"Known hooks: {', '.join(sorted(HOOK_KINDS))}"
            ) from exc

    def _call_registration_hooks(self, plugin_name: str) -> None:
        origin = self._origins[plugin_name]
        for hook_name, kind in HOOK_KINDS.items():
            caller: Callable = getattr(self._pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin_name != plugin_name:
                    continue
                registrar = REGISTRARS[kind](self._registry, origin)
                impl.function(register=registrar)

    def _fail(self, name: str, origin: Origin, exc: Exception) -> None:
        if self.strict:
            raise PluginError(f"plugin {name!r} from {origin} failed to load: {exc!r}") from exc
        message = (
            f"eSurge plugin {name!r} from {origin} failed to load and was skipped: {exc!r}. "
            "Set ESURGE_STRICT_PLUGINS=1 to make this an error."
        )
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logger.warning(message)
        self._records.append(
            PluginRecord(name, origin.distribution, origin.version, "failed", repr(exc))
        )


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, with plugins loaded."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
    return _manager.load()


def reset_plugin_manager() -> None:
    """Forget the process-wide manager so the next call rediscovers plugins (for tests)."""
    global _manager
    with _manager_lock:
        _manager = None
