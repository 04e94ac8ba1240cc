"""Mapping an OpenAI request onto ``SamplingParams`` (its validation errors become 400s)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from esurge_core.sampling.params import SamplingParams
from esurge_server_openai.errors import APIError, validation_error
from esurge_server_openai.protocol import ChatCompletionRequest, CompletionRequest

#: Request fields passed to ``SamplingParams`` under the same name when set.
_PASSTHROUGH = (
    "temperature",
    "top_p",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "top_k",
    "min_p",
    "repetition_penalty",
    "min_tokens",
    "ignore_eos",
    "include_stop_str_in_output",
    "skip_special_tokens",
)

#: Default ``max_tokens`` of the legacy completions API (OpenAI's own default).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def chat_sampling_params(
    body: ChatCompletionRequest, default_max_tokens: int | None = None
) -> SamplingParams:
    """``SamplingParams`` of a chat request; ``max_tokens`` unset = ``default_max_tokens``
    (the operator's cap) or, without one, up to the context end."""
    fields = _common(body)
    fields["max_tokens"] = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    if fields["max_tokens"] is None:
        fields["max_tokens"] = default_max_tokens
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError("top_logprobs requires logprobs=true", param="top_logprobs")
    if body.logprobs:
        fields["logprobs"] = body.top_logprobs or 0
    renames = {"logprobs": "top_logprobs"}
    if body.max_completion_tokens is not None:
        renames["max_tokens"] = "max_completion_tokens"
    return _build(fields, renames)


def completion_sampling_params(
    body: CompletionRequest, max_tokens_cap: int | None = None
) -> SamplingParams:
    """``SamplingParams`` of a text completion request (``max_tokens`` defaults to 16, or
    to the operator's cap when that is lower)."""
    fields = _common(body)
    default = min(COMPLETIONS_DEFAULT_MAX_TOKENS, max_tokens_cap or COMPLETIONS_DEFAULT_MAX_TOKENS)
    fields["max_tokens"] = default if body.max_tokens is None else body.max_tokens
    if body.logprobs is not None:
        fields["logprobs"] = body.logprobs
    return _build(fields, {})


def _common(body: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    fields = {name: getattr(body, name) for name in _PASSTHROUGH}
    fields = {name: value for name, value in fields.items() if value is not None}
    if body.stop is not None:
        fields["stop"] = body.stop
    if body.stop_token_ids is not None:
        fields["stop_token_ids"] = body.stop_token_ids
    return fields


def _build(fields: dict[str, Any], renames: dict[str, str]) -> SamplingParams:
    try:
        return SamplingParams(**fields)
    except ValidationError as exc:
        error = validation_error(exc)
        if error.param in renames:
            error.param = renames[error.param]
            error.message = f"{error.param}: " + error.message.split(": ", 1)[-1]
        elif error.param is None:
            error.message = error.message.replace("request: ", "", 1)
        raise error from None
