"""The LRU queue of free pages that still hold a cached prefix: O(1) append, pop, removal.

A doubly linked list over page ids (the idea of vLLM v1's FreeKVCacheBlockQueue), stored in
two flat Python lists indexed by page id instead of one object per page: the links cost no
allocation and no attribute lookups. A prefix-cache hit takes a page out of the middle of the
queue in O(1), which a deque cannot do; an ordered dict can, but its "pop oldest" degrades
after many deletions at the front.
"""

from __future__ import annotations

from collections.abc import Iterator


class FreePageQueue:
    """Free cached pages, least recently freed first (the next eviction victim at the head).

    Args:
        num_pages: Size of the page id space; ids are 0 .. num_pages - 1.
    """

    __slots__ = ("_next", "_prev", "_sentinel", "_size")

    def __init__(self, num_pages: int) -> None:
        # Circular list with one sentinel whose id is num_pages: head = next[sentinel].
        self._sentinel = num_pages
        self._prev = [num_pages] * (num_pages + 1)
        self._next = [num_pages] * (num_pages + 1)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[int]:
        """Page ids from the head (evicted first) to the tail (freed last)."""
        nxt = self._next
        page = nxt[self._sentinel]
        while page != self._sentinel:
            yield page
            page = nxt[page]

    def append(self, page: int) -> None:
        """Put a page at the tail (most recently freed)."""
        sentinel = self._sentinel
        prev = self._prev
        tail = prev[sentinel]
        self._next[tail] = page
        prev[page] = tail
        self._next[page] = sentinel
        prev[sentinel] = page
        self._size += 1

    def remove(self, page: int) -> None:
        """Take a page out of the queue wherever it is; the caller guarantees it is queued."""
        prev = self._prev
        nxt = self._next
        before = prev[page]
        after = nxt[page]
        nxt[before] = after
        prev[after] = before
        self._size -= 1

    def popleft(self) -> int:
        """Remove and return the head (least recently freed).

        Raises:
            IndexError: the queue is empty.
        """
        page = self._next[self._sentinel]
        if page == self._sentinel:
            raise IndexError("pop from an empty FreePageQueue")
        self.remove(page)
        return page
