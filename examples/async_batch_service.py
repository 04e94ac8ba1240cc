"""An asyncio batch-processing service that drives the engine loop itself.

Jobs arrive on an ``asyncio.Queue``; one driver task admits them with ``add_request`` and runs
``step()`` in a worker thread (so the event loop stays responsive), resolving each job's
future when its request finishes. This is the pattern for embedding eSurge in an existing
asyncio application without its background thread.

    python examples/async_batch_service.py "prompt one" "prompt two"
"""

from __future__ import annotations

import asyncio
import sys

from esurge_core.engine.esurge import eSurge
from esurge_core.engine.outputs import RequestOutput
from esurge_core.sampling.params import SamplingParams


class BatchService:
    """Submit prompts from any coroutine; results come back as awaited ``RequestOutput``."""

    def __init__(self, engine: eSurge) -> None:
        self.engine = engine
        self._jobs: asyncio.Queue[tuple[str, SamplingParams, asyncio.Future]] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[RequestOutput]] = {}
        self._driver: asyncio.Task | None = None

    async def submit(self, prompt: str, params: SamplingParams) -> RequestOutput:
        """Queue one prompt and wait for its final output."""
        future: asyncio.Future[RequestOutput] = asyncio.get_running_loop().create_future()
        await self._jobs.put((prompt, params, future))
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive())
        return await future

    async def _drive(self) -> None:
        while not self._jobs.empty() or self._pending:
            while not self._jobs.empty():
                prompt, params, future = self._jobs.get_nowait()
                self._pending[self.engine.add_request(prompt, params)] = future
            for output in await asyncio.to_thread(self.engine.step):
                if output.finished:
                    self._pending.pop(output.request_id).set_result(output)


async def run(prompts: list[str]) -> list[str]:
    with eSurge("smollm2-135m-instruct", max_model_len=512) as engine:
        service = BatchService(engine)
        params = SamplingParams(temperature=0, max_tokens=32)
        outputs = await asyncio.gather(*(service.submit(p, params) for p in prompts))
        return [o.outputs[0].text for o in outputs]


if __name__ == "__main__":
    for text in asyncio.run(run(sys.argv[1:] or ["The capital of France is"])):
        print(text)
