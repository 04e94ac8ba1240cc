"""The state of one request as it moves through the engine.

A request is waiting (never run, or preempted and queued for recompute), running, or
finished with a reason. ``num_computed_tokens`` counts the tokens whose K/V are in the cache;
``num_tokens`` is prompt + output. A step schedules ``num_tokens - num_computed_tokens``
tokens (all, or a chunk of a long prompt); when a step reaches ``num_tokens`` the request
samples its next token.

With asynchronous scheduling the engine plans step N+1 while step N runs: each token step N
samples is held in ``output_token_ids`` by ``PENDING_TOKEN`` until it comes back, so the
next step can already be planned around it (its input id is taken from step N's output on
the device).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    from esurge_core.sampling.params import SamplingParams
    from esurge_core.scheduling.ngram_drafts import NgramIndex


#: Output slot of a token sampled by a step that is still running (never a real token id).
PENDING_TOKEN = -1


class RequestStatus(Enum):
    """Where a request is."""

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


class FinishReason(StrEnum):
    """Why a request finished (the OpenAI ``finish_reason`` values plus ``abort``/``error``)."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


@dataclass(slots=True, eq=False)
class Request:
    """One sequence being generated (an ``n > 1`` prompt becomes ``n`` requests).

    Attributes:
        request_id: unique id (``<parent>`` or ``<parent>-<index>`` for ``n > 1``).
        prompt_token_ids: the prompt.
        sampling_params: validated sampling parameters.
        arrival_time: ``time.monotonic()`` at admission; orders FCFS.
        priority: lower is more important.
        seed: the RNG seed actually used (drawn at admission when the caller gave none).
        eos_token_ids: token ids that end generation unless ``ignore_eos``.
        cache_salt: tenant salt for the prefix cache (set per API key by the server).
        output_token_ids: generated tokens; the last may be ``PENDING_TOKEN``.
        num_computed_tokens: tokens whose K/V are written (advanced at schedule time).
        num_cached_tokens: prompt tokens served from the prefix cache at first admission.
        num_preemptions: how often this request was preempted.
        ngram_index: the n-grams of its tokens, for speculative drafts (built on first use).
        status / finish_reason: lifecycle.
        first_scheduled_time / first_token_time / last_token_time / finished_time:
            ``time.monotonic()`` stamps (``None`` until reached), set at step boundaries by
            the engine's metrics recorder (``EngineMetrics.record_step``).
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_time: float
    seed: int
    max_tokens: int
    eos_token_ids: frozenset[int] = frozenset()
    priority: int = 0
    cache_salt: str | None = None
    parent_id: str | None = None
    choice_index: int = 0
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = -1
    num_preemptions: int = 0
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None
    error: str | None = None
    # Where its n-grams occurred, for speculative drafts (scheduling.ngram_drafts); built on
    # the first lookup.
    ngram_index: NgramIndex | None = None
    # Timing for metrics (see docs/monitoring.md); arrival_time above is the first stamp.
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None

    @property
    def num_prompt_tokens(self) -> int:
        """Length of the prompt."""
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        """Tokens generated so far."""
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus output."""
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def has_pending_token(self) -> bool:
        """Whether the last output token is still being sampled by a running step."""
        return bool(self.output_token_ids) and self.output_token_ids[-1] == PENDING_TOKEN

    @property
    def num_known_tokens(self) -> int:
        """Prompt plus output tokens whose ids are known (``num_tokens`` less a pending one)."""
        return self.num_tokens - self.has_pending_token

    def ends_by_length(self, num_output: int, max_model_len: int) -> bool:
        """Whether ``num_output`` generated tokens reach ``max_tokens`` or ``max_model_len``."""
        return (
            num_output >= self.max_tokens
            or len(self.prompt_token_ids) + num_output >= max_model_len
        )

    def drop_pending_token(self) -> None:
        """Forget a pending token (the request ended before it came back)."""
        if self.has_pending_token:
            self.output_token_ids.pop()

    @property
    def token_ids_view(self) -> JoinedTokenIds:
        """Prompt followed by output without a copy: what the scheduler hands the KV-cache
        manager (every step), which reads its length and slices only (a joined list would be
        work that grows with the request's history on every step)."""
        return JoinedTokenIds(self.prompt_token_ids, self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        """Whether the request has ended."""
        return self.status is RequestStatus.FINISHED

    def tokens_between(self, start: int, end: int) -> list[int]:
        """Tokens at positions ``[start, end)`` of prompt + output."""
        return self.token_ids_view[start:end]

    def finish(self, reason: FinishReason, stop_reason: int | str | None = None) -> None:
        """Mark the request finished (idempotent: the first reason wins); a pending token
        is dropped, as nothing will read it."""
        if self.status is RequestStatus.FINISHED:
            return
        self.drop_pending_token()
        self.status = RequestStatus.FINISHED
        self.finish_reason = reason
        self.stop_reason = stop_reason


class JoinedTokenIds(Sequence[int]):
    """``prompt + output (+ drafts)`` as a read-only sequence over the lists (no copy); a
    slice is a new list of just the tokens it covers. ``drafts`` are a step's speculative
    tokens after the known ones (``scheduling.ngram_drafts``)."""

    __slots__ = ("_drafts", "_output", "_prompt")

    def __init__(self, prompt: list[int], output: list[int], drafts: Sequence[int] = ()) -> None:
        self._prompt = prompt
        self._output = output
        self._drafts = drafts

    def __len__(self) -> int:
        return len(self._prompt) + len(self._output) + len(self._drafts)

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        prompt_len = len(self._prompt)
        known = prompt_len + len(self._output)
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            if stop > known:
                drafts = list(self._drafts[max(start - known, 0) : stop - known])
                return (self[start:known] if start < known else []) + drafts
            if stop <= prompt_len:
                return self._prompt[start:stop]
            if start >= prompt_len:
                return self._output[start - prompt_len : stop - prompt_len]
            return self._prompt[start:] + self._output[: stop - prompt_len]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"token index {index} out of range for {len(self)} tokens")
        if index >= known:
            return self._drafts[index - known]
        return self._prompt[index] if index < prompt_len else self._output[index - prompt_len]
