"""``POST /v1/chat/completions``: chat messages through the model's chat template."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from esurge_core.engine.outputs import RequestOutput
from esurge_server_openai.admission import Ticket
from esurge_server_openai.auth import ApiKeyRecord
from esurge_server_openai.errors import APIError
from esurge_server_openai.generation import (
    SSE_DONE,
    ClientDisconnected,
    check_context,
    error_event,
    event_stream,
    final_output,
    merge_streams,
    sse,
    submit,
    until_done_or_disconnect,
    usage_body,
)
from esurge_server_openai.logprobs import chat_logprobs
from esurge_server_openai.protocol import ChatCompletionRequest
from esurge_server_openai.sampling import chat_sampling_params
from esurge_server_openai.tool_calls import StreamingToolCallFilter

if TYPE_CHECKING:
    from esurge_server_openai.server import eSurgeApiServer


async def create_chat_completion(
    server: eSurgeApiServer,
    request: Request,
    body: ChatCompletionRequest,
    key: ApiKeyRecord | None,
    ticket: Ticket,
) -> Response:
    """Answer one chat completion request (JSON, or SSE when ``stream`` is true)."""
    engine = server.engine
    deadline = server.deadline()
    params = chat_sampling_params(body, server.options.max_tokens_cap)
    prompt_ids = server.render_chat(body)
    check_context(len(prompt_ids), params, engine.max_model_len, "messages")
    try:
        params.validate_for_vocab(engine.model.vocab_size)
    except ValueError as exc:
        raise APIError(str(exc)) from None
    request_id = f"chatcmpl-{server.id_tag}{uuid.uuid4().hex}"
    submitted = await submit(
        engine,
        {"prompt_token_ids": prompt_ids},
        params,
        priority=body.priority,
        cache_salt=key.label if key is not None else None,
        request_id=request_id,
    )
    ticket.add(request_id)
    model = server.model_name
    created = int(time.time())
    timeout = server.options.request_timeout_s
    if body.stream:
        outputs = merge_streams([submitted], deadline, timeout)
        return event_stream(_chunks(server, body, key, outputs, request_id, created))
    try:
        final = await until_done_or_disconnect(request, final_output(submitted), deadline, timeout)
    except ClientDisconnected:
        return Response(status_code=499)
    finally:
        await submitted.close()
    server.check_output(final)
    server.record_usage(key, final.num_prompt_tokens, final.num_generated_tokens)
    choices = []
    for choice in final.outputs:
        message: dict[str, Any] = {"role": "assistant", "content": choice.text}
        reason = choice.finish_reason
        if _tools_enabled(body):
            parsed = server.tool_parser.parse(choice.text)
            if parsed.tool_calls:
                message = {
                    "role": "assistant",
                    "content": parsed.content,
                    "tool_calls": parsed.tool_calls,
                }
                reason = "tool_calls"
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": (
                    chat_logprobs(engine.tokenizer, choice.logprobs)
                    if choice.logprobs is not None
                    else None
                ),
                "finish_reason": reason,
            }
        )
    return JSONResponse(
        {
            "id": request_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage_body(
                final.num_prompt_tokens, final.num_generated_tokens, final.num_cached_tokens
            ),
        }
    )


async def _chunks(
    server: eSurgeApiServer,
    body: ChatCompletionRequest,
    key: ApiKeyRecord | None,
    outputs: AsyncIterator[tuple[int, RequestOutput]],
    request_id: str,
    created: int,
) -> AsyncIterator[str]:
    tokenizer = server.engine.tokenizer
    base: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": server.model_name,
        "system_fingerprint": None,
    }
    role_sent: set[int] = set()
    finish_sent: set[int] = set()
    logprobs_sent: dict[int, int] = {}
    filters: dict[int, StreamingToolCallFilter] = {}
    last: RequestOutput | None = None
    try:
        async for _, output in outputs:
            last = output
            server.check_output(output)
            for choice in output.outputs:
                index = choice.index
                new_logprobs = None
                if choice.logprobs is not None:
                    start = logprobs_sent.get(index, 0)
                    if len(choice.logprobs) > start:
                        new_logprobs = chat_logprobs(tokenizer, choice.logprobs[start:])
                        logprobs_sent[index] = len(choice.logprobs)
                finishing = choice.finish_reason is not None and index not in finish_sent
                text, tool_calls = choice.delta_text, []
                if _tools_enabled(body):
                    parser = filters.setdefault(index, StreamingToolCallFilter(server.tool_parser))
                    text = parser.feed(text)
                    if finishing:
                        rest, tool_calls = parser.finish()
                        text += rest
                if not (text or new_logprobs or index not in role_sent or finishing):
                    continue
                delta: dict[str, Any] = {}
                if index not in role_sent:
                    delta["role"] = "assistant"
                    role_sent.add(index)
                if text or "role" in delta:
                    delta["content"] = text
                reason = choice.finish_reason if finishing else None
                if tool_calls:
                    delta["tool_calls"] = [
                        {"index": position, **call} for position, call in enumerate(tool_calls)
                    ]
                    reason = "tool_calls"
                if finishing:
                    finish_sent.add(index)
                yield sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": index,
                                "delta": delta,
                                "logprobs": new_logprobs,
                                "finish_reason": reason,
                            }
                        ],
                    }
                )
        if body.include_usage and last is not None:
            usage = usage_body(
                last.num_prompt_tokens, last.num_generated_tokens, last.num_cached_tokens
            )
            yield sse({**base, "choices": [], "usage": usage})
    except Exception as exc:
        yield error_event(exc)
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
        if last is not None:
            server.record_usage(key, last.num_prompt_tokens, last.num_generated_tokens)
    yield SSE_DONE


def _tools_enabled(body: ChatCompletionRequest) -> bool:
    """Whether the answer is parsed for tool calls (tools given, ``tool_choice`` not none)."""
    return bool(body.tools) and body.tool_choice != "none"
