"""Transparent huge pages under arrays held in host memory (Linux), for the weights on CPU.

A decode step of a small batch reads every weight from memory once: about 240 MB a step for
SmolLM2-135M with bf16 weights. XLA's CPU client allocates them with ``malloc``, whose heap
Linux backs with 4 KiB pages where transparent huge pages are in ``madvise`` mode (as on the
machines measured here) unless told otherwise, so each step walks some 60,000 pages. Moving
the weights into 2 MiB pages once they are loaded made the step's weight products stream
faster on the 2-core Zen 4 kind: 30 layers of SmolLM2's products at one row 10.33 against
10.89 ms (medians, faster in 28 of 40 alternations), W2-shaped streams 3-9% and W1-shaped
batches 4% faster (docs/PERFORMANCE.md step 47). In ``always`` mode the heap may already be
in huge pages, and the call changes little.

:func:`back_with_huge_pages` advises the memory under the given arrays with
``MADV_HUGEPAGE`` and collapses it at once with ``MADV_COLLAPSE`` (Linux 6.1 and later). The
contents stay as they are; only the page size under them changes. Buffers lying close
together in the heap are covered as one range, so small weights between large ones move too;
the first and last part of a range that do not fill a whole huge page stay in small pages.
Where the kernel lacks ``MADV_COLLAPSE``, transparent huge pages are off (``never``), or the
system cannot find free huge pages, nothing (or less) moves and nothing fails.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import jax

__all__ = ["back_with_huge_pages", "huge_page_size"]

logger = logging.getLogger(__name__)

_MADV_HUGEPAGE = 14
_MADV_COLLAPSE = 25
_THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
_DEFAULT_HUGE_PAGE = 2 << 20


def huge_page_size() -> int | None:
    """The transparent huge page size in bytes, or ``None`` where this system has none (not
    Linux, or transparent huge pages set to ``never``)."""
    if sys.platform != "linux":
        return None
    try:
        if "[never]" in (_THP_DIR / "enabled").read_text():
            return None
    except OSError:
        return None
    try:
        return int((_THP_DIR / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return _DEFAULT_HUGE_PAGE


def _host_ranges(arrays: Iterable[jax.Array]) -> list[tuple[int, int]]:
    """[start, end) of each array's buffer, for arrays held whole in one CPU device's memory."""
    ranges = []
    for array in arrays:
        if not isinstance(array, jax.Array) or array.is_deleted() or array.nbytes == 0:
            continue
        devices = array.devices()
        if len(devices) != 1 or next(iter(devices)).platform != "cpu":
            continue
        try:
            start = array.unsafe_buffer_pointer()
        except (RuntimeError, ValueError):  # deleted, or not a single buffer
            continue
        ranges.append((start, start + array.nbytes))
    return ranges


def _merged(ranges: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """The ranges sorted, those less than ``gap`` bytes apart joined into one."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start - merged[-1][1] < gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def back_with_huge_pages(arrays: Iterable[jax.Array]) -> int:
    """Move the host memory under ``arrays`` into transparent huge pages (see the module
    docstring); return the bytes now in huge pages (0 where the system does not support it).
    Arrays on other devices than the CPU, or sharded over several, are left alone."""
    size = huge_page_size()
    if size is None:
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    moved = 0
    for start, end in _merged(_host_ranges(arrays), size):
        first = -(-start // size) * size  # whole huge pages inside the range only
        last = end // size * size
        if last <= first:
            continue
        if madvise(first, last - first, _MADV_HUGEPAGE) != 0:
            continue
        if madvise(first, last - first, _MADV_COLLAPSE) == 0:
            moved += last - first
            continue
        code = ctypes.get_errno()
        if code == errno.EINVAL:  # a kernel without MADV_COLLAPSE: no range will do better
            logger.debug("MADV_COLLAPSE is not supported here; weights stay in small pages")
            break
        logger.debug(
            "MADV_COLLAPSE of %d bytes failed: %s", last - first, errno.errorcode.get(code, code)
        )
    return moved
