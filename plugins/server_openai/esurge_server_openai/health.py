"""``EngineWatchdog``: whether the engine is alive, stalled or idle, as ``/health`` reports it.

The engine records ``last_step_time`` after each step but not when it wakes from idle, so a
stall is measured from the later of the last step and the last moment the watchdog saw the
engine idle (it samples every ``watchdog_interval_s``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "draining", "dead", "wedged"]


@dataclass(slots=True, frozen=True)
class HealthReport:
    """What ``/health`` answers."""

    status: Status
    detail: str

    @property
    def http_status(self) -> int:
        """200 when ``ok``, else 503."""
        return 200 if self.status == "ok" else 503


class EngineWatchdog:
    """Samples ``engine`` liveness and progress."""

    def __init__(self, engine: Any, wedge_threshold_s: float):
        self.engine = engine
        self.wedge_threshold_s = wedge_threshold_s
        self._idle_seen_at = time.monotonic()

    def sample(self) -> None:
        """Note the time if the engine is idle now (called periodically)."""
        if not self.engine.has_unfinished_requests():
            self._idle_seen_at = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds the engine has had work but made no step (0 when idle)."""
        self.sample()
        if not self.engine.has_unfinished_requests():
            return 0.0
        since = max(self.engine.last_step_time, self._idle_seen_at)
        return max(0.0, time.monotonic() - since)

    def report(self, draining: bool) -> HealthReport:
        """The engine's health (a draining server is not healthy for load balancers)."""
        if not self.engine.is_alive:
            return HealthReport("dead", "the engine loop is not running")
        stalled = self.stalled_for()
        if stalled > self.wedge_threshold_s:
            return HealthReport(
                "wedged",
                f"the engine has unfinished requests but made no step for {stalled:.1f} s "
                f"(threshold {self.wedge_threshold_s:g} s)",
            )
        if draining:
            return HealthReport("draining", "the server is shutting down")
        return HealthReport("ok", f"{self.engine.num_steps} steps")
