"""Shortest-prompt-first: short requests are not stuck behind long prefills."""

from __future__ import annotations

from collections.abc import Sequence

from esurge_core.scheduling.policy import RequestView


class ShortestFirstPolicy:
    """Admit by (prompt length, arrival); preempt the request with the most prompt left."""

    name = "shortest_first"

    def admission_key(self, request: RequestView) -> tuple[int, float]:
        """Shorter prompts first, then earlier arrivals."""
        return (request.num_prompt_tokens, request.arrival_time)

    def choose_victim(self, running: Sequence[RequestView]) -> RequestView:
        """The request with the longest prompt still to compute; newest on ties."""
        return max(
            running,
            key=lambda r: (r.num_prompt_tokens - r.num_computed_tokens, r.arrival_time),
        )

    def may_preempt_for(self, waiting: RequestView, running: RequestView) -> bool:
        """Never preempt by rank: only page pressure preempts."""
        return False
