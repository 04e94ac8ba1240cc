"""``Admission``: which HTTP requests may start, and the registry of those in flight.

A request is refused at once (never queued behind others) when the server is draining
(503) or when the engine's waiting queue is at ``max_queued_requests`` (429); both answers
carry ``Retry-After``. Admitted requests hold a ``Ticket`` until their response is finished;
the registry lets shutdown wait for them and abort the rest.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from esurge_server_openai.errors import APIError


@dataclass(slots=True, eq=False)
class Ticket:
    """One admitted HTTP request: the engine request ids it drives, released once."""

    admission: Admission
    num_seqs: int
    request_ids: list[str] = field(default_factory=list)
    released: bool = False

    def add(self, request_id: str) -> None:
        """Record an engine request driven by this HTTP request."""
        self.request_ids.append(request_id)

    def release(self) -> None:
        """The HTTP request is over (idempotent)."""
        self.admission._release(self)


class Admission:
    """Admission control over ``engine`` for one server."""

    def __init__(self, engine: Any, max_queued: int | None, retry_after_s: int):
        self.engine = engine
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self.draining = False
        self._tickets: set[Ticket] = set()
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """HTTP requests admitted and not finished."""
        with self._lock:
            return len(self._tickets)

    def queued_seqs(self, extra: int = 0) -> int:
        """Sequences of this server that would wait for a slot, with ``extra`` more."""
        with self._lock:
            return self._queued(extra)

    def _queued(self, extra: int) -> int:
        admitted = sum(t.num_seqs for t in self._tickets) + extra
        return max(0, admitted - self.engine.scheduler.max_num_seqs)

    def admit(self, num_seqs: int) -> Ticket:
        """A ticket for a request of ``num_seqs`` sequences, or a 503/429 ``APIError``."""
        if self.draining:
            raise APIError(
                "the server is shutting down and accepts no new requests",
                status=503,
                type="server_error",
                code="server_shutting_down",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        with self._lock:
            if self.max_queued is not None:
                queued = self._queued(0)
                if self._queued(num_seqs) > self.max_queued:
                    raise APIError(
                        f"the server is at capacity ({queued} sequences already waiting, "
                        f"limit {self.max_queued}); retry later",
                        status=429,
                        type="rate_limit_error",
                        code="queue_full",
                        headers={"Retry-After": str(self.retry_after_s)},
                    )
            ticket = Ticket(self, num_seqs)
            self._tickets.add(ticket)
            return ticket

    def abort_all(self) -> int:
        """Abort every engine request in flight; returns how many were aborted."""
        with self._lock:
            ids = [rid for ticket in self._tickets for rid in ticket.request_ids]
        for request_id in ids:
            self.engine.abort(request_id)
        return len(ids)

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            if not ticket.released:
                ticket.released = True
                self._tickets.discard(ticket)
