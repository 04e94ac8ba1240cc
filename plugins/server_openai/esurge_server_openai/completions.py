"""``POST /v1/completions``: text completion for one or many prompts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from esurge_core.engine.outputs import CompletionOutput, RequestOutput
from esurge_server_openai.admission import Ticket
from esurge_server_openai.auth import ApiKeyRecord
from esurge_server_openai.errors import APIError
from esurge_server_openai.generation import (
    SSE_DONE,
    ClientDisconnected,
    Submitted,
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
from esurge_server_openai.logprobs import completion_logprobs
from esurge_server_openai.protocol import CompletionRequest
from esurge_server_openai.sampling import completion_sampling_params

if TYPE_CHECKING:
    from esurge_server_openai.server import eSurgeApiServer


def num_prompts(prompt: Any) -> int:
    """How many prompts ``prompt`` holds (a string or token ids count as one)."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return 1
    return max(1, len(prompt))


def _prompts(engine: Any, prompt: Any) -> list[tuple[str, list[int]]]:
    """``(text, token ids)`` per prompt of a string, strings, token ids or lists of ids."""
    if isinstance(prompt, str):
        items: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        items = [prompt]
    else:
        items = list(prompt)
    if not items:
        raise APIError("prompt is an empty list; give at least one prompt", param="prompt")
    result = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            ids = list(engine.tokenizer.encode(item))
            text = item
        else:
            ids = list(item)
            bad = [t for t in ids if not 0 <= t < engine.model.vocab_size]
            if bad:
                raise APIError(
                    f"prompt[{index}] has token ids {bad[:5]} outside the vocabulary "
                    f"[0, {engine.model.vocab_size})",
                    param="prompt",
                )
            text = engine.tokenizer.decode(ids)
        if not ids:
            raise APIError(f"prompt[{index}] is empty", param="prompt")
        result.append((text, ids))
    return result


async def create_completion(
    server: eSurgeApiServer,
    request: Request,
    body: CompletionRequest,
    key: ApiKeyRecord | None,
    ticket: Ticket,
) -> Response:
    """Answer one completion request (JSON, or SSE when ``stream`` is true)."""
    engine = server.engine
    deadline = server.deadline()
    timeout = server.options.request_timeout_s
    params = completion_sampling_params(body, server.options.max_tokens_cap)
    if body.echo and body.logprobs is not None:
        raise APIError("echo together with logprobs is not supported", param="echo")
    prompts = _prompts(engine, body.prompt)
    for _, ids in prompts:
        check_context(len(ids), params, engine.max_model_len, "prompt")
    try:
        params.validate_for_vocab(engine.model.vocab_size)
    except ValueError as exc:
        raise APIError(str(exc)) from None
    request_id = f"cmpl-{server.id_tag}{uuid.uuid4().hex}"
    salt = key.label if key is not None else None
    streams: list[Submitted] = []
    try:
        for index, (text, ids) in enumerate(prompts):
            streams.append(
                await submit(
                    engine,
                    {"prompt_token_ids": ids, "prompt": text},
                    params,
                    priority=body.priority,
                    cache_salt=salt,
                    request_id=f"{request_id}-{index}",
                )
            )
            ticket.add(f"{request_id}-{index}")
    except BaseException:
        for submitted in streams:
            await submitted.close()
        raise
    created = int(time.time())
    if body.stream:
        outputs = merge_streams(streams, deadline, timeout)
        return event_stream(_chunks(server, body, key, prompts, outputs, request_id, created))

    async def gather() -> list[RequestOutput]:
        return list(await asyncio.gather(*(final_output(s) for s in streams)))

    try:
        finals = await until_done_or_disconnect(request, gather(), deadline, timeout)
    except ClientDisconnected:
        return Response(status_code=499)
    finally:
        for submitted in streams:
            await submitted.close()
    choices = []
    prompt_tokens = completion_tokens = cached = 0
    for prompt_index, final in enumerate(finals):
        server.check_output(final)
        prompt_tokens += final.num_prompt_tokens
        completion_tokens += final.num_generated_tokens
        cached += final.num_cached_tokens
        prefix = prompts[prompt_index][0] if body.echo else ""
        for choice in final.outputs:
            choices.append(
                {
                    "index": prompt_index * params.n + choice.index,
                    "text": prefix + choice.text,
                    "logprobs": _logprobs(engine, choice, 0),
                    "finish_reason": choice.finish_reason,
                }
            )
    server.record_usage(key, prompt_tokens, completion_tokens)
    return JSONResponse(
        {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": server.model_name,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage_body(prompt_tokens, completion_tokens, cached),
        }
    )


def _logprobs(engine: Any, choice: CompletionOutput, offset: int) -> dict[str, Any] | None:
    if choice.logprobs is None:
        return None
    body, _ = completion_logprobs(engine.tokenizer, choice.logprobs, offset)
    return body


async def _chunks(
    server: eSurgeApiServer,
    body: CompletionRequest,
    key: ApiKeyRecord | None,
    prompts: list[tuple[str, list[int]]],
    outputs: AsyncIterator[tuple[int, RequestOutput]],
    request_id: str,
    created: int,
) -> AsyncIterator[str]:
    tokenizer = server.engine.tokenizer
    n = 1 if body.n is None else body.n
    base = {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": server.model_name,
        "system_fingerprint": None,
    }
    started: set[int] = set()
    finish_sent: set[int] = set()
    logprobs_sent: dict[int, int] = {}
    offsets: dict[int, int] = {}
    lasts: dict[int, RequestOutput] = {}
    try:
        async for prompt_index, output in outputs:
            lasts[prompt_index] = output
            server.check_output(output)
            for choice in output.outputs:
                index = prompt_index * n + choice.index
                text = choice.delta_text
                if index not in started and body.echo:
                    text = prompts[prompt_index][0] + text
                new_logprobs = None
                if choice.logprobs is not None:
                    start = logprobs_sent.get(index, 0)
                    if len(choice.logprobs) > start:
                        new_logprobs, offsets[index] = completion_logprobs(
                            tokenizer, choice.logprobs[start:], offsets.get(index, 0)
                        )
                        logprobs_sent[index] = len(choice.logprobs)
                finishing = choice.finish_reason is not None and index not in finish_sent
                started.add(index)
                if not (text or new_logprobs or finishing):
                    continue
                if finishing:
                    finish_sent.add(index)
                yield sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": index,
                                "text": text,
                                "logprobs": new_logprobs,
                                "finish_reason": choice.finish_reason if finishing else None,
                            }
                        ],
                    }
                )
        if body.include_usage:
            yield sse({**base, "choices": [], "usage": _total_usage(lasts.values())})
    except Exception as exc:
        yield error_event(exc)
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
        usage = _total_usage(lasts.values())
        if lasts:
            server.record_usage(key, usage["prompt_tokens"], usage["completion_tokens"])
    yield SSE_DONE


def _total_usage(outputs: Any) -> dict[str, Any]:
    outputs = list(outputs)
    return usage_body(
        sum(o.num_prompt_tokens for o in outputs),
        sum(o.num_generated_tokens for o in outputs),
        sum(o.num_cached_tokens for o in outputs),
    )
