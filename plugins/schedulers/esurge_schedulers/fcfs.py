"""First come, first served."""

from __future__ import annotations

from collections.abc import Sequence

from esurge_core.scheduling.policy import RequestView


class FCFSPolicy:
    """Admit in arrival order; under page pressure preempt the newest running request."""

    name = "fcfs"

    def admission_key(self, request: RequestView) -> float:
        """Earlier arrivals first (a preempted request keeps its arrival, so it goes first)."""
        return request.arrival_time

    def choose_victim(self, running: Sequence[RequestView]) -> RequestView:
        """The most recent arrival among ``running``."""
        return max(running, key=lambda r: r.arrival_time)

    def may_preempt_for(self, waiting: RequestView, running: RequestView) -> bool:
        """Never: FCFS keeps arrival order."""
        return False
