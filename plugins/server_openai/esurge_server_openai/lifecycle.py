"""``GracefulServer``: uvicorn with a draining shutdown and an engine watchdog.

On the first SIGTERM/SIGINT the server stops admitting (``/health`` and new requests answer
503), lets in-flight requests finish for up to ``drain_timeout_s``, then aborts the rest (they
end with ``finish_reason: "abort"``), waits briefly for those answers to flush, and exits.
A second signal exits at once. When the engine loop dies, the server stops with
``exit_code = 1`` so a supervisor restarts it.
"""

from __future__ import annotations

import logging
import time
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from esurge_server_openai.server import eSurgeApiServer

logger = logging.getLogger(__name__)

#: After aborting the stragglers, how long their final answers may take to flush.
ABORT_FLUSH_S = 5.0


class GracefulServer(uvicorn.Server):
    """A ``uvicorn.Server`` serving ``api`` that drains on signals and watches the engine."""

    def __init__(self, config: uvicorn.Config, api: eSurgeApiServer):
        super().__init__(config)
        self.api = api
        self.exit_code = 0
        self._drain_started: float | None = None
        self._aborted_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: begin draining; second: exit now (the signal is not re-raised)."""
        if self._drain_started is None:
            self.begin_drain()
        else:
            self.should_exit = True
            self.force_exit = True

    def begin_drain(self) -> None:
        """Stop admitting and start the drain clock."""
        if self._drain_started is None:
            logger.info("draining: no new requests; %d in flight", self.api.admission.in_flight)
            self.api.admission.draining = True
            self._drain_started = time.monotonic()

    async def on_tick(self, counter: int) -> bool:
        """Every 0.1 s: engine liveness and drain progress; True ends the main loop."""
        should_exit = await super().on_tick(counter)
        if not self.api.engine.is_alive:
            logger.error("the engine loop died; stopping the server")
            self.exit_code = 1
            return True
        if self._drain_started is not None:
            return self._drain_step(time.monotonic())
        return should_exit

    def _drain_step(self, now: float) -> bool:
        admission = self.api.admission
        if admission.in_flight == 0:
            return True
        if self._aborted_at is None:
            if now - self._drain_started >= self.api.options.drain_timeout_s:
                count = admission.abort_all()
                logger.warning("drain timeout: aborted %d engine requests", count)
                self._aborted_at = now
            return False
        return now - self._aborted_at >= ABORT_FLUSH_S
