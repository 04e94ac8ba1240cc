"""Read the collectives out of a compiled step's HLO, to check what tensor parallelism costs.

    text = jax.jit(step, ...).lower(*args).compile().as_text()
    for op in collectives(text): print(op.kind, op.shape)

A healthy tensor-parallel step all-reduces activations ([tokens, hidden]) and gathers
logits; an all-gather the size of a weight means a weight is being re-assembled every step
(a sharding rule is wrong).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

COLLECTIVE_KINDS = (
    "all-gather",
    "all-reduce",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
)

_INSTRUCTION = re.compile(
    r"=\s*(?P<type>\([^=]*?\)|[a-z0-9]+\[[0-9,]*\](?:\{[^}]*\})?)\s+"
    r"(?P<kind>" + "|".join(COLLECTIVE_KINDS) + r")(?:-start)?\("
)
_ARRAY = re.compile(r"([a-z0-9]+)\[([0-9,]*)\]")


@dataclass(frozen=True, slots=True)
class Collective:
    """One collective instruction: its kind and the shapes of what it produces."""

    kind: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def num_elements(self) -> int:
        """Elements produced (summed over a tuple result)."""
        return sum(math.prod(shape) for shape in self.shapes)


def collectives(hlo_text: str) -> list[Collective]:
    """Every collective in the HLO text (async `*-start` forms counted once, as their op)."""
    found = []
    for match in _INSTRUCTION.finditer(hlo_text):
        shapes = tuple(
            tuple(int(d) for d in dims.split(",") if d)
            for _, dims in _ARRAY.findall(match.group("type"))
        )
        found.append(Collective(match.group("kind"), shapes))
    return found


def count_by_kind(hlo_text: str) -> dict[str, int]:
    """How many collectives of each kind the HLO holds (kinds absent: not listed)."""
    counts: dict[str, int] = {}
    for op in collectives(hlo_text):
        counts[op.kind] = counts.get(op.kind, 0) + 1
    return counts
