"""What a component can serve (capabilities) and what a configuration asks for (requirements).

Capabilities are plain data declared at registration time, so checking whether a backend is
usable never imports its kernel module. `Capabilities.unmet(requirements)` returns every
reason the component cannot serve a configuration, not only the first one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Requirements:
    """What the engine needs from a component for the current model and machine.

    A field left at ``None`` (or empty) is not checked.
    """

    platform: str | None = None
    dtype: str | None = None
    head_dim: int | None = None
    page_size: int | None = None
    patterns: frozenset[str] = frozenset()
    soft_cap: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a component supports. ``None`` means "any value"; an empty set means "none".

    Attributes:
        platforms: JAX platform names the component runs on ("cpu", "gpu", "tpu").
        dtypes: activation dtypes it accepts ("float32", "bfloat16").
        head_dims: supported attention head sizes, or ``None`` for any.
        page_size_multiple: page sizes must be a multiple of this (1 = any page size).
        patterns: attention patterns ("full", "sliding_window", "chunked").
        soft_cap: whether attention logit soft-capping is supported.
        auto_priority: per platform, how strongly ``"auto"`` prefers this component
            (higher wins; a platform not listed is never chosen by ``"auto"``).
    """

    platforms: frozenset[str] | None = None
    dtypes: frozenset[str] | None = None
    head_dims: frozenset[int] | None = None
    page_size_multiple: int = 1
    patterns: frozenset[str] | None = None
    soft_cap: bool = True
    auto_priority: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        platforms: Iterable[str] | None = None,
        dtypes: Iterable[str] | None = None,
        head_dims: Iterable[int] | None = None,
        page_size_multiple: int = 1,
        patterns: Iterable[str] | None = None,
        soft_cap: bool = True,
        auto_priority: dict[str, int] | None = None,
    ) -> Capabilities:
        """Build capabilities from any iterables (lists are frozen into sets)."""
        return cls(
            platforms=None if platforms is None else frozenset(platforms),
            dtypes=None if dtypes is None else frozenset(dtypes),
            head_dims=None if head_dims is None else frozenset(head_dims),
            page_size_multiple=page_size_multiple,
            patterns=None if patterns is None else frozenset(patterns),
            soft_cap=soft_cap,
            auto_priority=dict(auto_priority or {}),
        )

    def unmet(self, req: Requirements) -> list[str]:
        """Every reason these capabilities cannot serve ``req`` (empty list: usable)."""
        reasons: list[str] = []
        if req.platform and self.platforms is not None and req.platform not in self.platforms:
            reasons.append(
                f"platform {req.platform!r} is not supported (supports {sorted(self.platforms)})"
            )
        if req.dtype and self.dtypes is not None and req.dtype not in self.dtypes:
            reasons.append(f"dtype {req.dtype!r} is not supported (supports {sorted(self.dtypes)})")
        if req.head_dim and self.head_dims is not None and req.head_dim not in self.head_dims:
            reasons.append(
                f"head_dim {req.head_dim} is not supported (supports {sorted(self.head_dims)})"
            )
        if req.page_size and req.page_size % self.page_size_multiple:
            reasons.append(
                f"page_size {req.page_size} is not a multiple of {self.page_size_multiple}"
            )
        if self.patterns is not None:
            missing = sorted(req.patterns - self.patterns)
            if missing:
                reasons.append(
                    f"attention patterns {missing} are not supported (supports {sorted(self.patterns)})"
                )
        if req.soft_cap and not self.soft_cap:
            reasons.append("attention logit soft-capping is not supported")
        return reasons

    def describe(self) -> str:
        """A one-line human summary, used by ``esurge plugins``."""
        parts = []
        if self.platforms is not None:
            parts.append("platforms=" + ",".join(sorted(self.platforms)))
        if self.dtypes is not None:
            parts.append("dtypes=" + ",".join(sorted(self.dtypes)))
        if self.head_dims is not None:
            parts.append("head_dims=" + ",".join(map(str, sorted(self.head_dims))))
        if self.page_size_multiple > 1:
            parts.append(f"page_size%{self.page_size_multiple}==0")
        if self.patterns is not None:
            parts.append("patterns=" + ",".join(sorted(self.patterns)))
        return " ".join(parts)
