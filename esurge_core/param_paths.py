"""Reading a nested params tree (dicts and lists, as ``tree_from_specs`` builds it) by path.

A path is a tuple of keys, the form of ``ParamSpec.path``: ``("layers", 3, "attn", "q")``.
Kept outside ``esurge_core.models`` so the matmul package, which the models import, can use
it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def node_at(tree: Any, path: Sequence) -> Any:
    """The node at ``path`` in ``tree`` (``tree`` itself for the empty path)."""
    node = tree
    for key in path:
        node = node[key]
    return node
