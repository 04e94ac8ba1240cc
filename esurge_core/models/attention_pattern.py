"""Which tokens each layer attends to, and the KV-cache groups that follow from it.

A model lists one `LayerAttention` per decoder layer; layers with equal patterns share a
KV-cache group (contract C), i.e. one page table per step. Groups are numbered in order of
the first layer that uses them, so a uniform model has the single group 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from esurge_core.kv_cache.groups import KVCacheGroupSpec

AttentionPatternName = Literal["full", "sliding_window", "chunked"]


@dataclass(frozen=True, slots=True)
class LayerAttention:
    """The attention pattern of one layer.

    Attributes:
        pattern: "full" (causal), "sliding_window" (a query at p sees keys in
            (p - sliding_window, p]) or "chunked" (keys of p's chunk of `chunk_size`, up to p).
        sliding_window: Window length for "sliding_window", else None.
        chunk_size: Chunk length for "chunked", else None.
    """

    pattern: AttentionPatternName
    sliding_window: int | None = None
    chunk_size: int | None = None

    @classmethod
    def full(cls) -> LayerAttention:
        """Causal attention over the whole context."""
        return cls("full")

    @classmethod
    def sliding(cls, window: int) -> LayerAttention:
        """Causal attention over the last `window` positions (the query's own included)."""
        return cls("sliding_window", sliding_window=int(window))

    @classmethod
    def chunked(cls, chunk_size: int) -> LayerAttention:
        """Causal attention inside fixed chunks of `chunk_size` positions (Llama 4)."""
        return cls("chunked", chunk_size=int(chunk_size))


def group_layers(
    layers: Sequence[LayerAttention],
) -> tuple[list[KVCacheGroupSpec], tuple[int, ...]]:
    """Group layers of equal attention pattern.

    Returns:
        The KV-cache group specs (in order of first use) and, for each layer, its group index.
    """
    order: list[LayerAttention] = []
    layer_to_group: list[int] = []
    for layer in layers:
        if layer not in order:
            order.append(layer)
        layer_to_group.append(order.index(layer))
    groups = [
        KVCacheGroupSpec(
            pattern=pattern.pattern,
            layer_indices=tuple(i for i, g in enumerate(layer_to_group) if g == index),
            sliding_window=pattern.sliding_window,
            chunk_size=pattern.chunk_size,
        )
        for index, pattern in enumerate(order)
    ]
    return groups, tuple(layer_to_group)
