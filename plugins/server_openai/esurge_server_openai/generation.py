"""Running engine requests for an HTTP request: admission checks, disconnects, SSE.

Every engine request is consumed through ``eSurge.async_stream``, whose ``finally`` aborts
the request when the consumer stops early; the helpers here make sure the consumer does
stop (and closes its generators) when the HTTP client goes away.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from esurge_core.engine.esurge import EngineDeadError
from esurge_core.engine.outputs import RequestOutput
from esurge_core.sampling.params import SamplingParams
from esurge_server_openai.errors import APIError

#: Seconds between two checks for a vanished client while a non-streaming request runs.
DISCONNECT_POLL_S = 0.1


class ClientDisconnected(Exception):
    """The HTTP client went away before its answer was ready."""


def check_context(
    num_prompt_tokens: int, params: SamplingParams, max_model_len: int, param: str
) -> None:
    """400 ``context_length_exceeded`` when the prompt plus ``max_tokens`` do not fit."""
    wanted = num_prompt_tokens + (params.max_tokens or 1)
    if wanted > max_model_len:
        detail = (
            f"{num_prompt_tokens} prompt tokens + {params.max_tokens} max_tokens"
            if params.max_tokens is not None
            else f"{num_prompt_tokens} prompt tokens (plus at least 1 generated token)"
        )
        raise APIError(
            f"this model's maximum context length is {max_model_len} tokens; the request "
            f"needs {wanted} ({detail}); shorten the prompt or lower max_tokens",
            param=param,
            code="context_length_exceeded",
        )


@dataclass(slots=True)
class Submitted:
    """One engine request: its output stream and the task awaiting its first output."""

    stream: AsyncGenerator[RequestOutput, None]
    first: asyncio.Future[RequestOutput]

    async def close(self) -> None:
        """Stop waiting and close the stream (aborts the request if unfinished)."""
        if not self.first.done():
            self.first.cancel()
        await asyncio.gather(self.first, return_exceptions=True)
        await self.stream.aclose()


async def submit(
    engine: Any, prompt: dict[str, Any], params: SamplingParams, **kwargs: Any
) -> Submitted:
    """Add one request to ``engine`` without waiting for it to be scheduled.

    Admission errors of the engine (raised synchronously by ``add_request``) become a 400,
    a dead engine a 503. The first output is awaited by ``Submitted.first``; cancelling that
    task while the request still waits in the queue aborts it before it is ever scheduled.
    """
    stream = engine.async_stream(prompt, params, **kwargs)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)  # the task runs add_request, then waits for the first output
    if first.done() and first.exception() is not None:
        exc = first.exception()
        await stream.aclose()
        if isinstance(exc, EngineDeadError):
            raise APIError(
                f"the engine is not running: {exc}", status=503, type="server_error"
            ) from None
        if isinstance(exc, ValueError):
            raise APIError(str(exc)) from None
        raise exc
    return Submitted(stream, first)


def request_timed_out(timeout_s: float) -> APIError:
    """The error of a request that ran past the server's ``request_timeout_s``."""
    return APIError(
        f"the request did not finish within the server's limit of {timeout_s:g} s and was aborted",
        status=504,
        type="server_error",
        code="request_timeout",
    )


def engine_failed(exc: BaseException) -> APIError:
    """The error of a request whose engine died under it."""
    return APIError(f"the engine stopped: {exc}", status=503, type="server_error")


async def final_output(submitted: Submitted) -> RequestOutput:
    """Drain one request and return its last output (the finished one)."""
    try:
        last = await submitted.first
        if not last.finished:
            async for output in submitted.stream:
                last = output
    finally:
        await submitted.close()
    return last


async def until_done_or_disconnect(
    request: Request, work: Any, deadline: float | None = None, timeout_s: float | None = None
) -> Any:
    """Await ``work`` (a coroutine); cancel it, aborting its engine requests, when the
    client disconnects first (``ClientDisconnected``) or ``deadline`` passes (504)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            wait = DISCONNECT_POLL_S
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            done, _ = await asyncio.wait({task}, timeout=wait)
            if done:
                try:
                    return task.result()
                except EngineDeadError as exc:
                    raise engine_failed(exc) from None
            if deadline is not None and time.monotonic() >= deadline:
                raise request_timed_out(timeout_s or 0.0)
            if await request.is_disconnected():
                raise ClientDisconnected()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def merge_streams(
    streams: Sequence[Submitted], deadline: float | None = None, timeout_s: float | None = None
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several request streams as ``(stream index, output)``.

    Closing the merged generator cancels every pump, which aborts unfinished requests;
    passing ``deadline`` (monotonic seconds) raises a 504 ``APIError`` when it is reached.
    """
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(index: int) -> None:
        submitted = streams[index]
        try:
            first = await submitted.first
            await queue.put((index, first))
            if not first.finished:
                async for output in submitted.stream:
                    await queue.put((index, output))
            await queue.put((index, None))
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put((index, exc))
        finally:
            await submitted.close()

    tasks = [asyncio.ensure_future(pump(index)) for index in range(len(streams))]
    remaining = len(tasks)
    try:
        while remaining:
            if deadline is None:
                index, item = await queue.get()
            else:
                try:
                    index, item = await asyncio.wait_for(
                        queue.get(), max(0.0, deadline - time.monotonic())
                    )
                except TimeoutError:
                    raise request_timed_out(timeout_s or 0.0) from None
            if item is None:
                remaining -= 1
            elif isinstance(item, EngineDeadError):
                raise engine_failed(item)
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for submitted in streams:
            await submitted.close()


def sse(payload: dict[str, Any]) -> str:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"


class ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body generator, however the response
    ends (client gone, send failure, cancellation), so the engine requests it drives abort;
    ``on_close`` runs last, even when the body never started."""

    on_close: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                if self.on_close is not None:
                    self.on_close()


def event_stream(
    body: AsyncIterator[str], on_close: Callable[[], None] | None = None
) -> ClosingStreamingResponse:
    """The SSE response for ``body``; ``on_close`` runs once the response is over."""
    response = ClosingStreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.on_close = on_close
    return response


def usage_body(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def error_event(exc: BaseException) -> str:
    """The SSE event reporting an error that happened after the stream started."""
    if isinstance(exc, APIError):
        return sse(exc.body())
    return sse(
        {
            "error": {
                "message": f"generation failed ({type(exc).__name__})",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    )
