"""A step's host inputs sent to the device as one buffer per dtype.

A step has about twenty small numpy inputs (token ids, positions, the attention metadata, the
sampling parameters). Passed to a jitted function one by one, each becomes its own
host-to-device transfer: about 0.25 ms per step on the 2-core CPU of docs/PERFORMANCE.md,
against 0.02 ms for one concatenated buffer. ``pack_host_arrays`` concatenates the leaves of
each dtype into one flat buffer and returns a static ``HostLayout``; inside the compiled step
``unpack_host_arrays`` slices the leaves back out (free: XLA reads them in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np


@dataclass(frozen=True, slots=True)
class HostLayout:
    """Where each leaf of a packed pytree sits (hashable: a static argument of ``jax.jit``).

    Attributes:
        treedef: the pytree's structure.
        dtypes: the dtype of each buffer, in buffer order.
        leaves: per leaf, ``(buffer index, offset, shape)``.
    """

    treedef: Any
    dtypes: tuple[str, ...]
    leaves: tuple[tuple[int, int, tuple[int, ...]], ...]


def pack_host_arrays(tree: Any) -> tuple[HostLayout, tuple[np.ndarray, ...]]:
    """``tree``'s array leaves as one flat buffer per dtype, and the layout to recover them."""
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [np.asarray(leaf) for leaf in leaves]
    dtypes: list[str] = []
    index_of: dict[np.dtype, int] = {}
    parts: list[list[np.ndarray]] = []
    sizes: list[int] = []
    placed = []
    for array in arrays:
        index = index_of.get(array.dtype)
        if index is None:
            index = index_of[array.dtype] = len(dtypes)
            dtypes.append(array.dtype.name)  # a slow property (3.6 us): once per dtype
            parts.append([])
            sizes.append(0)
        placed.append((index, sizes[index], array.shape))
        parts[index].append(array.reshape(-1))
        sizes[index] += array.size
    buffers = tuple(
        np.concatenate(chunks) if chunks else np.zeros(0, dtype)
        for chunks, dtype in zip(parts, dtypes, strict=True)
    )
    return HostLayout(treedef, tuple(dtypes), tuple(placed)), buffers


def unpack_host_arrays(layout: HostLayout, buffers: tuple[jax.Array, ...]) -> Any:
    """The pytree ``pack_host_arrays`` packed (traceable: static slices of the buffers)."""
    leaves = []
    for index, offset, shape in layout.leaves:
        size = int(np.prod(shape, dtype=np.int64))
        leaves.append(buffers[index][offset : offset + size].reshape(shape))
    return jax.tree.unflatten(layout.treedef, leaves)
