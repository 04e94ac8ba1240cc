"""Stop strings over streamed text: never leak a stop string, or a possible start of one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StopCheck:
    """Result of feeding one text delta.

    Attributes:
        text: what may be streamed to the user now (possibly empty).
        stopped: True when a stop string completed; the request should finish.
        stop_string: the stop string that matched, or None.
    """

    text: str
    stopped: bool = False
    stop_string: str | None = None


@dataclass(slots=True)
class StopStringMatcher:
    """Per-request stop-string state for streamed text.

    Feed each detokenised delta; it returns what is safe to emit. Text that could be the
    beginning of a stop string (the longest suffix that is a proper prefix of one) is held
    back until the next delta decides it. The first stop string to *complete* wins (earliest
    end; on a tie, the earliest start), which is what a character-by-character stream would
    see, so the result does not depend on how the text was split into deltas. Work per delta
    is O(len(delta) + longest stop string) per stop string.

    Attributes:
        stops: the request's stop strings (non-empty strings).
        include_stop_str_in_output: emit the stop string itself before stopping.
    """

    stops: Sequence[str]
    include_stop_str_in_output: bool = False
    _held: str = ""
    _prefixes: frozenset[str] = field(default=frozenset(), init=False)
    _longest: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.stops = tuple(self.stops)
        if any(stop == "" for stop in self.stops):
            raise ValueError("stop strings must be non-empty")
        self._prefixes = frozenset(s[:i] for s in self.stops for i in range(1, len(s)))
        self._longest = max((len(s) for s in self.stops), default=0)

    @property
    def held_text(self) -> str:
        """Text received but not yet emitted (a possible start of a stop string)."""
        return self._held

    def feed(self, delta: str, *, allow_stop: bool = True) -> StopCheck:
        """Take the next delta; return what to emit and whether a stop string completed.

        Args:
            delta: newly detokenised text.
            allow_stop: False while the request is below ``min_tokens``: complete stop
                strings are then emitted as ordinary text (partial ones are still held).
        """
        if not self.stops:
            return StopCheck(delta)
        text = self._held + delta
        if allow_stop:
            match = self._earliest_completed(text)
            if match is not None:
                start, stop = match
                end = start + len(stop) if self.include_stop_str_in_output else start
                self._held = ""
                return StopCheck(text[:end], stopped=True, stop_string=stop)
        keep = self._held_suffix_length(text)
        self._held = text[len(text) - keep :]
        return StopCheck(text[: len(text) - keep])

    def flush(self) -> str:
        """Release held text when the request ends for another reason (EOS, length)."""
        held, self._held = self._held, ""
        return held

    def _earliest_completed(self, text: str) -> tuple[int, str] | None:
        best: tuple[int, int, str] | None = None
        for stop in self.stops:
            start = text.find(stop)
            if start < 0:
                continue
            candidate = (start + len(stop), start, stop)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
        return None if best is None else (best[1], best[2])

    def _held_suffix_length(self, text: str) -> int:
        for length in range(min(len(text), self._longest - 1), 0, -1):
            if text[len(text) - length :] in self._prefixes:
                return length
        return 0
