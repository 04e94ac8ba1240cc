"""The interface of a scheduling policy plugin.

The core's scheduler does the mechanics of a step (token budget, chunked prefill, page
allocation, preemption). A policy only answers the questions where engines differ:
which waiting request is admitted first, which running request is preempted when pages run
out, and whether a waiting request may preempt a running one. That keeps a third-party
policy a few lines long (see ``examples/plugins/esurge-shortest-first``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class RequestView(Protocol):
    """What a policy may read of a request (the engine's request state provides it)."""

    @property
    def request_id(self) -> str: ...

    @property
    def arrival_time(self) -> float: ...

    @property
    def priority(self) -> int:
        """Lower value = more important (vLLM's convention)."""
        ...

    @property
    def num_prompt_tokens(self) -> int: ...

    @property
    def num_computed_tokens(self) -> int: ...


@runtime_checkable
class SchedulingPolicy(Protocol):
    """Ordering decisions of a scheduler, all pure functions of request views."""

    name: str

    def admission_key(self, request: RequestView) -> Any:
        """Sort key of the waiting queue: the smallest key is admitted first."""
        ...

    def choose_victim(self, running: Sequence[RequestView]) -> RequestView:
        """The running request to preempt when pages run out (``running`` is non-empty)."""
        ...

    def may_preempt_for(self, waiting: RequestView, running: RequestView) -> bool:
        """Whether ``waiting`` may take the place of ``running`` even though pages remain
        scarce (priority scheduling); ``False`` for policies without preemption by rank."""
        ...
