"""Per-request sampling parameters, validated at admission (field names follow vLLM)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Temperatures below this are treated as greedy decoding (vLLM uses the same epsilon).
GREEDY_TEMPERATURE_EPS = 1e-5
#: Most completions one request may ask for (``n``).
MAX_N = 128
#: Most top log-probabilities one request may ask for (``logprobs``, ``prompt_logprobs``).
MAX_LOGPROBS = 20
#: Bound on the magnitude of one ``logit_bias`` entry (the OpenAI API's range).
MAX_LOGIT_BIAS = 100.0


class SamplingParams(BaseModel):
    """How to pick the tokens of one request; immutable once validated.

    Every field is checked on construction: a bad value raises ``pydantic.ValidationError``
    (a ``ValueError``) naming the field, the value given and the allowed range. Numbers are
    strict (``True`` is not ``1``) and NaN or infinity are rejected. Token ids can only be
    range-checked against a vocabulary, so call :meth:`validate_for_vocab` once the model is
    known.

    Processing order on device (see ``docs/sampling.md``): repetition/presence/frequency
    penalties, logit bias (and min-token blocking of stop tokens), temperature, min-p, top-k,
    top-p, then sampling. ``temperature == 0`` is greedy: argmax of the penalised and biased
    logits, the truncation parameters are ignored.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    n: int = Field(1, ge=1, le=MAX_N, description="Completions to generate for the prompt.")
    max_tokens: int | None = Field(
        16, ge=1, description="Most tokens to generate; None = up to the model's max length."
    )
    min_tokens: int = Field(
        0, ge=0, description="Stop tokens, EOS and stop strings are ignored before this many."
    )
    temperature: float = Field(1.0, ge=0.0, description="Softmax temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus mass to keep; 1 = off.")
    top_k: int = Field(-1, ge=-1, description="Keep the k most likely tokens; -1 or 0 = off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens below min_p * max prob.")
    repetition_penalty: float = Field(
        1.0, gt=0.0, description="Divide positive / multiply negative logits of seen tokens."
    )
    presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Subtracted once from tokens already generated."
    )
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Subtracted per occurrence in the generated tokens."
    )
    logit_bias: dict[int, float] | None = Field(
        None, description="Token id -> additive bias in [-100, 100]."
    )
    seed: int | None = Field(None, description="RNG seed; None = drawn once at admission.")
    stop: tuple[str, ...] = Field((), description="Stop strings (not included in the output).")
    stop_token_ids: tuple[int, ...] = Field((), description="Token ids that end the request.")
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = Field(
        None, ge=0, le=MAX_LOGPROBS, description="Top log-probs per output token (0 = sampled)."
    )
    prompt_logprobs: int | None = Field(
        None, ge=0, le=MAX_LOGPROBS, description="Top log-probs per prompt token."
    )
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _logit_bias_keys_to_int(cls, value: Any) -> Any:
        # JSON objects (the OpenAI API) carry token ids as strings: accept "50256" as 50256.
        if isinstance(value, Mapping):
            converted: dict[Any, Any] = {}
            for key, bias in value.items():
                if isinstance(key, str) and key.strip().lstrip("-").isdigit():
                    key = int(key)
                converted[key] = bias
            return converted
        return value

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        if value is None:
            return None
        for token_id, bias in value.items():
            if token_id < 0:
                raise ValueError(f"logit_bias token id {token_id} must be >= 0")
            if not math.isfinite(bias) or abs(bias) > MAX_LOGIT_BIAS:
                raise ValueError(
                    f"logit_bias[{token_id}] = {bias} must be a finite number in "
                    f"[-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}]"
                )
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list):
            return tuple(value)
        return value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, stop in enumerate(value):
            if stop == "":
                raise ValueError(
                    f"stop[{index}] is an empty string; stop strings must be non-empty"
                )
        return value

    @field_validator("stop_token_ids", mode="before")
    @classmethod
    def _stop_token_ids_as_tuple(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, list):
            return tuple(value)
        return value

    @field_validator("stop_token_ids")
    @classmethod
    def _check_stop_token_ids(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        negative = [token_id for token_id in value if token_id < 0]
        if negative:
            raise ValueError(f"stop_token_ids {negative} must be >= 0")
        return value

    @model_validator(mode="after")
    def _check_token_limits(self) -> SamplingParams:
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) must be <= max_tokens ({self.max_tokens})"
            )
        return self

    @property
    def greedy(self) -> bool:
        """True when this request decodes greedily (temperature below the epsilon)."""
        return self.temperature < GREEDY_TEMPERATURE_EPS

    @property
    def uses_penalties(self) -> bool:
        """True when any of the repetition, presence or frequency penalties is active."""
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )

    def validate_for_vocab(self, vocab_size: int) -> None:
        """Check that every token id in these parameters exists in a ``vocab_size`` vocabulary.

        Raises:
            ValueError: naming the field and the out-of-range ids, with the allowed range.
        """
        limit = f"[0, {vocab_size - 1}] (vocabulary size {vocab_size})"
        if self.logit_bias:
            bad = sorted(t for t in self.logit_bias if t >= vocab_size)
            if bad:
                raise ValueError(f"logit_bias has token ids {bad} outside {limit}")
        bad = sorted(t for t in self.stop_token_ids if t >= vocab_size)
        if bad:
            raise ValueError(f"stop_token_ids has token ids {bad} outside {limit}")
