"""Running engine requests for an HTTP request: admission checks, disconnects, SSE.

Every engine request is consumed through ``eSurge.async_stream``, whose ``finally`` aborts
the request when the consumer stops early; the helpers here make sure the consumer does
stop (and closes its generators) when the HTTP client goes away.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
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


async def open_stream(
    engine: Any, prompt: dict[str, Any], params: SamplingParams, **kwargs: Any
) -> tuple[AsyncIterator[RequestOutput], RequestOutput]:
    """Submit one request; return its stream and first output (admission errors -> 400)."""
    stream = engine.async_stream(prompt, params, **kwargs)
    try:
        first = await stream.__anext__()
    except ValueError as exc:
        await stream.aclose()
        raise APIError(str(exc)) from None
    except EngineDeadError as exc:
        await stream.aclose()
        raise APIError(
            f"the engine is not running: {exc}", status=503, type="server_error"
        ) from None
    except BaseException:
        await stream.aclose()
        raise
    return stream, first


async def final_output(stream: AsyncIterator[RequestOutput], first: RequestOutput) -> RequestOutput:
    """Drain ``stream`` and return its last output (the finished one)."""
    last = first
    try:
        if not first.finished:
            async for output in stream:
                last = output
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return last


async def until_done_or_disconnect(request: Request, work: Any) -> Any:
    """Await ``work`` (a coroutine); cancel it, aborting its engine requests, when the
    client disconnects first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnected()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def merge_streams(
    streams: Sequence[tuple[AsyncIterator[RequestOutput], RequestOutput]],
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several request streams as ``(stream index, output)``, first outputs first.

    Closing the merged generator cancels every pump, which aborts unfinished requests.
    """
    for index, (_, first) in enumerate(streams):
        yield index, first
    pending = [index for index, (_, first) in enumerate(streams) if not first.finished]
    if not pending:
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(index: int) -> None:
        stream = streams[index][0]
        try:
            async for output in stream:
                await queue.put((index, output))
            await queue.put((index, None))
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put((index, exc))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    tasks = [asyncio.ensure_future(pump(index)) for index in pending]
    remaining = len(tasks)
    try:
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def sse(payload: dict[str, Any]) -> str:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"


class ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body generator, however the response
    ends (client gone, send failure, cancellation), so the engine requests it drives abort."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def event_stream(body: AsyncIterator[str]) -> ClosingStreamingResponse:
    """The SSE response for ``body``."""
    return ClosingStreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


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
