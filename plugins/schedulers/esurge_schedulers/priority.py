"""Priority scheduling: a lower ``priority`` value is more important (vLLM's convention)."""

from __future__ import annotations

from collections.abc import Sequence

from esurge_core.scheduling.policy import RequestView


class PriorityPolicy:
    """Admit by (priority, arrival); preempt the worst (priority, arrival).

    A waiting request may preempt a running one of strictly lower importance, so a
    high-priority request submitted into a full engine starts at the next step.
    """

    name = "priority"

    def admission_key(self, request: RequestView) -> tuple[int, float]:
        """Most important first, then earliest arrival."""
        return (request.priority, request.arrival_time)

    def choose_victim(self, running: Sequence[RequestView]) -> RequestView:
        """The least important running request; the newest among equals."""
        return max(running, key=lambda r: (r.priority, r.arrival_time))

    def may_preempt_for(self, waiting: RequestView, running: RequestView) -> bool:
        """Only for a strictly more important request."""
        return waiting.priority < running.priority
