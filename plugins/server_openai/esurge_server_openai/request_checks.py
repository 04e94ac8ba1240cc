"""Operator limits and shape checks on a parsed request (each failure a 400 naming the field).

``SamplingParams`` checks the ranges of sampling values; this module adds what only the
server knows (``ServerOptions`` limits, the vocabulary, the shape of chat messages and tools)
and bounds every integer so no value can overflow a device array.
"""

from __future__ import annotations

from typing import Any

from esurge_server_openai.errors import APIError
from esurge_server_openai.options import ServerOptions
from esurge_server_openai.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields

#: Roles a chat message may have.
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


def check_sampling_fields(
    body: SamplingFields, options: ServerOptions, vocab_size: int, max_model_len: int
) -> None:
    """Limits shared by chat and text completions."""
    if body.n > options.max_n:
        raise _limit("n", body.n, f"at most {options.max_n}")
    for name in ("max_tokens", "min_tokens", "top_k", "priority"):
        value = getattr(body, name)
        if value is not None and not -_INT32 - 1 <= value <= _INT32:
            raise _limit(name, value, f"in [{-_INT32 - 1}, {_INT32}]")
    if body.seed is not None and not -_INT64 - 1 <= body.seed <= _INT64:
        raise _limit("seed", body.seed, "a 64-bit signed integer")
    cap = options.max_tokens_cap or max_model_len
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(body, name, None)
        if value is not None and value > cap:
            raise _limit(name, value, f"at most {cap} on this server")
    if body.min_tokens is not None and body.min_tokens > max_model_len:
        raise _limit("min_tokens", body.min_tokens, f"at most {max_model_len}")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > options.max_stop_strings:
        raise _limit("stop", f"{len(stops)} strings", f"at most {options.max_stop_strings}")
    for index, stop in enumerate(stops):
        if len(stop) > options.max_stop_length:
            raise _limit(
                "stop", f"stop[{index}] of {len(stop)} characters", f"<= {options.max_stop_length}"
            )
    ids = body.stop_token_ids or []
    if len(ids) > options.max_stop_token_ids:
        raise _limit("stop_token_ids", f"{len(ids)} ids", f"at most {options.max_stop_token_ids}")
    _check_ids("stop_token_ids", ids, vocab_size)
    bias = body.logit_bias or {}
    if len(bias) > options.max_logit_bias:
        raise _limit("logit_bias", f"{len(bias)} entries", f"at most {options.max_logit_bias}")
    for key in bias:
        if not key.strip().lstrip("-").isdigit():
            raise APIError(
                f"logit_bias: keys are token ids written as strings, got {key[:40]!r}",
                param="logit_bias",
            )
        if not 0 <= int(key) < vocab_size:
            raise _limit("logit_bias", f"token id {key}", f"in [0, {vocab_size})")


def check_chat_request(body: ChatCompletionRequest, options: ServerOptions) -> None:
    """Logprob limits, message and tool shapes, ``tool_choice``, client templates."""
    if body.top_logprobs is not None and body.top_logprobs > options.max_logprobs:
        raise _limit("top_logprobs", body.top_logprobs, f"at most {options.max_logprobs}")
    if not options.allow_client_chat_template and (
        body.chat_template is not None or body.chat_template_kwargs is not None
    ):
        field = "chat_template" if body.chat_template is not None else "chat_template_kwargs"
        raise APIError(
            f"{field} is disabled on this server (the operator can enable "
            "allow_client_chat_template)",
            param=field,
            code="chat_template_disabled",
        )
    for index, message in enumerate(body.messages):
        _check_message(index, message)
    names = _check_tools(body.tools)
    _check_tool_choice(body.tool_choice, names)


def check_completion_request(body: CompletionRequest, options: ServerOptions) -> None:
    """Logprob and prompt-count limits of a text completion."""
    if body.logprobs is not None and not 0 <= body.logprobs <= options.max_logprobs:
        raise _limit("logprobs", body.logprobs, f"in [0, {options.max_logprobs}]")
    prompt = body.prompt
    count = 1 if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else len(prompt)
    if count > options.max_prompts:
        raise _limit("prompt", f"{count} prompts", f"at most {options.max_prompts}")


def _check_message(index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise APIError(f"{where} must be an object with role and content", param="messages")
    role = message.get("role")
    if role not in ROLES:
        raise APIError(
            f"{where}.role must be one of {sorted(ROLES)}, got {str(role)[:40]!r}",
            param="messages",
        )
    content = message.get("content")
    if isinstance(content, list):
        for part_index, part in enumerate(content):
            if not (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                raise APIError(
                    f"{where}.content[{part_index}] must be {{'type': 'text', 'text': str}} "
                    "(only text parts are supported)",
                    param="messages",
                )
    elif content is None:
        if not (role == "assistant" and message.get("tool_calls")):
            raise APIError(f"{where}.content is missing", param="messages")
    elif not isinstance(content, str):
        raise APIError(
            f"{where}.content must be a string or a list of text parts", param="messages"
        )
    if "name" in message and not isinstance(message["name"], str):
        raise APIError(f"{where}.name must be a string", param="messages")
    calls = message.get("tool_calls")
    if calls is not None:
        if role != "assistant" or not isinstance(calls, list):
            raise APIError(
                f"{where}.tool_calls must be a list on an assistant message", param="messages"
            )
        for call_index, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not (
                isinstance(function, dict)
                and isinstance(function.get("name"), str)
                and isinstance(function.get("arguments", ""), str | dict)
            ):
                raise APIError(
                    f"{where}.tool_calls[{call_index}] must be {{'type': 'function', "
                    "'function': {'name': str, 'arguments': str}}",
                    param="messages",
                )


def _check_tools(tools: list[dict[str, Any]] | None) -> set[str]:
    names: set[str] = set()
    for index, tool in enumerate(tools or []):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise APIError(
                f"tools[{index}] must be {{'type': 'function', 'function': {{...}}}}",
                param="tools",
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(
                f"tools[{index}].function.name must be a non-empty string", param="tools"
            )
        if not isinstance(function.get("description", ""), str):
            raise APIError(f"tools[{index}].function.description must be a string", param="tools")
        if not isinstance(function.get("parameters", {}), dict):
            raise APIError(f"tools[{index}].function.parameters must be an object", param="tools")
        names.add(name)
    return names


def _check_tool_choice(choice: str | dict[str, Any] | None, names: set[str]) -> None:
    if choice is None or choice in ("none", "auto"):
        return
    if choice == "required":
        if not names:
            raise APIError("tool_choice 'required' needs tools", param="tool_choice")
        return
    if isinstance(choice, str):
        raise APIError(
            f"tool_choice must be 'none', 'auto', 'required' or a function, got {choice[:40]!r}",
            param="tool_choice",
        )
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise APIError(
            "tool_choice must be {'type': 'function', 'function': {'name': str}}",
            param="tool_choice",
        )
    if name not in names:
        raise APIError(
            f"tool_choice names the function {name[:64]!r}, which is not in tools "
            f"({sorted(names)[:10]})",
            param="tool_choice",
        )


def _check_ids(field: str, ids: list[int], vocab_size: int) -> None:
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise _limit(field, f"token ids {bad[:5]}", f"in [0, {vocab_size})")


def _limit(field: str, value: Any, allowed: str) -> APIError:
    return APIError(f"{field}: {value} is out of range; it must be {allowed}", param=field)
