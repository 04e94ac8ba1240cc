"""``RateLimiter``: per-key requests and tokens per minute, refused with 429 + Retry-After.

State exists only for registered keys (a flood of invalid keys is rejected by
authentication before it reaches here), and each key keeps at most one minute of history.
A refused request is neither queued nor billed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from esurge_server_openai.errors import APIError

WINDOW_S = 60.0


@dataclass(slots=True)
class KeyWindow:
    """The last minute of one key: request times and (time, tokens) of finished requests."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0


class RateLimiter:
    """Sliding one-minute windows per key label."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None):
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._windows: dict[str, KeyWindow] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    @property
    def num_tracked_keys(self) -> int:
        """Keys with state (bounded by the registered keys)."""
        return len(self._windows)

    def admit(self, label: str, now: float | None = None) -> None:
        """Count one request of ``label`` or raise a 429 ``APIError`` with Retry-After."""
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            window = self._windows.setdefault(label, KeyWindow())
            _expire(window, now)
            rpm, tpm = self.requests_per_minute, self.tokens_per_minute
            if rpm is not None and len(window.requests) >= rpm:
                wait = window.requests[0] + WINDOW_S - now
                raise _too_many(f"more than {rpm} requests per minute", wait, "rate_limit")
            if tpm is not None and window.token_sum >= tpm:
                wait = window.tokens[0][0] + WINDOW_S - now
                raise _too_many(f"more than {tpm} tokens per minute", wait, "token_quota")
            window.requests.append(now)

    def record_tokens(self, label: str, tokens: int, now: float | None = None) -> None:
        """Bill ``tokens`` of a served request to ``label``'s token window."""
        if self.tokens_per_minute is None or tokens <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            window = self._windows.setdefault(label, KeyWindow())
            window.tokens.append((now, tokens))
            window.token_sum += tokens

    def forget(self, label: str) -> None:
        """Drop the state of a revoked key."""
        with self._lock:
            self._windows.pop(label, None)


def _expire(window: KeyWindow, now: float) -> None:
    while window.requests and window.requests[0] <= now - WINDOW_S:
        window.requests.popleft()
    while window.tokens and window.tokens[0][0] <= now - WINDOW_S:
        window.token_sum -= window.tokens.popleft()[1]


def _too_many(what: str, wait_s: float, code: str) -> APIError:
    seconds = max(1, math.ceil(wait_s))
    return APIError(
        f"this API key sent {what}; retry in {seconds} s",
        status=429,
        type="rate_limit_error",
        code=code,
        headers={"Retry-After": str(seconds)},
    )
