"""The registry of every component the loaded plugins declared, and selection by name.

Selection rules (DESIGN.md §2):

* an unknown name is an error listing every installed option of that kind, with its
  distribution and version, and what to ``pip install`` for first-party names;
* a known name that cannot serve the configuration is an error with every reason;
* ``"auto"`` picks the usable component with the highest priority for the platform, logging
  why each preferred one was passed over;
* a second, different implementation registered under an existing name is an error naming
  both distributions.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from esurge_core.capabilities import Requirements
from esurge_core.components import ComponentKind, ComponentSpec
from esurge_core.errors import (
    DuplicateComponentError,
    UnknownComponentError,
    UnusableComponentError,
)

logger = logging.getLogger(__name__)

AUTO = "auto"

#: First-party component names and the distribution that provides each.
FIRST_PARTY_DISTRIBUTIONS: dict[ComponentKind, dict[str, str]] = {
    ComponentKind.ATTENTION_BACKEND: {
        "xla": "esurge-attention-xla",
        "pallas": "esurge-attention-pallas",
        "triton": "esurge-attention-triton",
        "cpu": "esurge-attention-cpu",
    },
    ComponentKind.MATMUL_BACKEND: {"cpu": "esurge-attention-cpu"},
    ComponentKind.SCHEDULER: {"fcfs": "esurge-schedulers", "priority": "esurge-schedulers"},
    ComponentKind.FRONTEND: {"serve": "esurge-server-openai"},
}


class ComponentRegistry:
    """Components by kind and name, with the selection rules above."""

    def __init__(self) -> None:
        self._specs: dict[ComponentKind, dict[str, ComponentSpec]] = defaultdict(dict)

    def add(self, spec: ComponentSpec) -> None:
        """Add ``spec``; re-adding the identical component is a no-op.

        Raises:
            DuplicateComponentError: another implementation already has this kind and name.
        """
        existing = self._specs[spec.kind].get(spec.name)
        if existing is not None:
            if existing.origin == spec.origin and existing.loader == spec.loader:
                return
            raise DuplicateComponentError(
                f"{spec.kind} {spec.name!r} is registered twice: by {existing.origin} "
                f"({existing.loader}) and by {spec.origin} ({spec.loader}). Uninstall one of "
                f"{existing.origin.distribution!r} and {spec.origin.distribution!r}, or disable "
                "one with ESURGE_DISABLE_PLUGINS."
            )
        self._specs[spec.kind][spec.name] = spec

    def remove_origin(self, distribution: str) -> None:
        """Drop everything a distribution registered (used when its plugin fails half-way)."""
        for specs in self._specs.values():
            for name in [n for n, s in specs.items() if s.origin.distribution == distribution]:
                del specs[name]

    def names(self, kind: ComponentKind) -> list[str]:
        """Names registered for ``kind``, sorted."""
        return sorted(self._specs[kind])

    def all(self, kind: ComponentKind | None = None) -> list[ComponentSpec]:
        """Every registered component (of ``kind`` if given), sorted by kind and name."""
        kinds = [kind] if kind is not None else list(ComponentKind)
        return [self._specs[k][n] for k in kinds for n in sorted(self._specs[k])]

    def get(self, kind: ComponentKind, name: str) -> ComponentSpec:
        """The component ``name`` of ``kind``.

        Raises:
            UnknownComponentError: listing every installed option and what to install.
        """
        try:
            return self._specs[kind][name]
        except KeyError:
            raise UnknownComponentError(self._unknown_message(kind, name)) from None

    def select(self, kind: ComponentKind, name: str, requirements: Requirements) -> ComponentSpec:
        """Choose the component for a configuration (``name`` may be ``"auto"``).

        Raises:
            UnknownComponentError: no component of that name is installed.
            UnusableComponentError: the named one (or, for ``auto``, every one) cannot
                serve ``requirements``; the message carries every reason.
        """
        if name == AUTO:
            return self._select_auto(kind, requirements)
        spec = self.get(kind, name)
        reasons = spec.unmet(requirements)
        if reasons:
            raise UnusableComponentError(
                f"{kind} {name!r} ({spec.origin}) cannot serve this configuration: "
                + "; ".join(reasons)
                + self._alternatives_hint(kind, requirements, exclude=name),
                {name: reasons},
            )
        return spec

    def _select_auto(self, kind: ComponentKind, requirements: Requirements) -> ComponentSpec:
        candidates = [
            (priority, spec)
            for spec in self._specs[kind].values()
            if (priority := spec.auto_priority(requirements.platform)) is not None
        ]
        candidates.sort(key=lambda item: (-item[0], item[1].name))
        reasons: dict[str, list[str]] = {}
        for _, spec in candidates:
            unmet = spec.unmet(requirements)
            if not unmet:
                if reasons:
                    logger.info(
                        "auto %s: chose %r; passed over %s",
                        kind,
                        spec.name,
                        "; ".join(f"{n!r} ({', '.join(r)})" for n, r in reasons.items()),
                    )
                return spec
            reasons[spec.name] = unmet
        for spec in self._specs[kind].values():
            if spec.name not in reasons:
                reasons[spec.name] = spec.unmet(requirements) or [
                    f"not eligible for 'auto' on platform {requirements.platform!r}"
                ]
        detail = "; ".join(f"{n!r}: {', '.join(r)}" for n, r in sorted(reasons.items()))
        installed = ", ".join(self.names(kind)) or "none installed"
        raise UnusableComponentError(
            f"no {kind} installed can serve this configuration with 'auto' "
            f"(installed: {installed}). Reasons: {detail or 'none registered'}."
            + self._install_hint(kind),
            reasons,
        )

    def _alternatives_hint(
        self, kind: ComponentKind, requirements: Requirements, exclude: str
    ) -> str:
        usable = [
            s.name
            for s in self._specs[kind].values()
            if s.name != exclude and not s.unmet(requirements)
        ]
        return f". Usable instead: {', '.join(sorted(usable))}." if usable else "."

    def _install_hint(self, kind: ComponentKind) -> str:
        missing = {
            name: dist
            for name, dist in FIRST_PARTY_DISTRIBUTIONS.get(kind, {}).items()
            if name not in self._specs[kind]
        }
        if not missing:
            return ""
        return " Not installed: " + ", ".join(
            f"{name!r} (pip install {dist})" for name, dist in sorted(missing.items())
        )

    def _unknown_message(self, kind: ComponentKind, name: str) -> str:
        installed = [f"{s.name} ({s.origin})" for s in self.all(kind)] or ["none"]
        message = f"unknown {kind} {name!r}. Installed: {', '.join(installed)}."
        dist = FIRST_PARTY_DISTRIBUTIONS.get(kind, {}).get(name)
        if dist:
            message += f" {name!r} is provided by {dist}: pip install {dist}"
        else:
            message += self._install_hint(kind)
        return message
