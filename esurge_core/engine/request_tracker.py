"""Host-side bookkeeping of one request between steps: text, stop checks, outputs.

One ``ChoiceTracker`` per generated sequence turns sampled token ids into text deltas
(incremental detokenisation, stop strings held back until decided) and decides when the
sequence ends. A ``RequestTracker`` groups the ``n`` choices of one user request and builds
the ``RequestOutput`` snapshots callers receive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esurge_core.detokenizer import IncrementalDetokenizer
from esurge_core.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from esurge_core.engine.request import FinishReason, Request
from esurge_core.sampling.stop_strings import StopStringMatcher


@dataclass(slots=True)
class ChoiceTracker:
    """Text and termination of one generated sequence."""

    request: Request
    detokenizer: IncrementalDetokenizer
    stops: StopStringMatcher
    max_model_len: int
    completion: CompletionOutput
    touched: bool = False

    @classmethod
    def create(cls, request: Request, tokenizer: Any, max_model_len: int) -> ChoiceTracker:
        """A tracker for a request that has produced nothing yet."""
        params = request.sampling_params
        return cls(
            request=request,
            detokenizer=IncrementalDetokenizer(
                tokenizer, request.prompt_token_ids, skip_special_tokens=params.skip_special_tokens
            ),
            stops=StopStringMatcher(params.stop, params.include_stop_str_in_output),
            max_model_len=max_model_len,
            completion=CompletionOutput(
                index=request.choice_index,
                logprobs=[] if params.logprobs is not None else None,
                cumulative_logprob=0.0 if params.logprobs is not None else None,
            ),
        )

    def on_token(
        self,
        token_id: int,
        logprob: float | None = None,
        top: list[tuple[int, float]] | None = None,
        *,
        num_output: int | None = None,
    ) -> FinishReason | None:
        """Record a sampled token (already in the request's outputs); return a finish reason
        when the sequence ends with it.

        ``num_output`` is how many tokens the request has generated with this one (default:
        its output count; with asynchronous scheduling a pending token of the next step may
        already follow it)."""
        request = self.request
        params = request.sampling_params
        completion = self.completion
        self.touched = True
        completion.delta_token_ids.append(token_id)
        if completion.logprobs is not None and logprob is not None:
            completion.logprobs.append(TokenLogprob(token_id, logprob, top or []))
            completion.cumulative_logprob = (completion.cumulative_logprob or 0.0) + logprob
        if num_output is None:
            num_output = request.num_output_tokens
        may_stop = num_output >= params.min_tokens
        reason: FinishReason | None = None
        stop_reason: int | str | None = None
        if may_stop and not params.ignore_eos and token_id in request.eos_token_ids:
            reason = FinishReason.STOP
        elif may_stop and token_id in params.stop_token_ids:
            reason, stop_reason = FinishReason.STOP, token_id
        delta = self.detokenizer.add_tokens([token_id])
        check = self.stops.feed(delta, allow_stop=may_stop)
        text = check.text
        if reason is None and check.stopped:
            reason, stop_reason = FinishReason.STOP, check.stop_string
        elif reason is None and request.ends_by_length(num_output, self.max_model_len):
            reason = FinishReason.LENGTH
        if reason is not None and not check.stopped:
            text += self.stops.feed(self.detokenizer.flush(), allow_stop=False).text
            text += self.stops.flush()
        completion.delta_text += text
        if reason is not None:
            request.finish(reason, stop_reason)
            completion.finish_reason = reason.value
            completion.stop_reason = stop_reason
        return reason

    def on_finished_elsewhere(self) -> None:
        """The request ended outside token processing (abort, error): record the reason."""
        self.touched = True
        if self.request.finish_reason is not None:
            self.completion.finish_reason = self.request.finish_reason.value

    def take_snapshot(self) -> CompletionOutput:
        """The completion as of now (deltas since the last snapshot), then reset the deltas."""
        completion = self.completion
        completion.text += completion.delta_text
        completion.token_ids.extend(completion.delta_token_ids)
        snapshot = CompletionOutput(
            index=completion.index,
            text=completion.text,
            token_ids=list(completion.token_ids),
            delta_text=completion.delta_text,
            delta_token_ids=completion.delta_token_ids,
            logprobs=None if completion.logprobs is None else list(completion.logprobs),
            cumulative_logprob=completion.cumulative_logprob,
            finish_reason=completion.finish_reason,
            stop_reason=completion.stop_reason,
        )
        completion.delta_text = ""
        completion.delta_token_ids = []
        self.touched = False
        return snapshot


@dataclass(slots=True)
class RequestTracker:
    """The ``n`` choices of one user request and where its outputs go."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    choices: list[ChoiceTracker]
    sink: Any = None
    last: list[CompletionOutput] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Every choice has ended."""
        return all(c.request.is_finished for c in self.choices)

    def snapshot(self) -> RequestOutput:
        """A ``RequestOutput`` with each touched choice's new deltas."""
        if not self.last:
            self.last = [c.take_snapshot() for c in self.choices]
        else:
            self.last = [
                c.take_snapshot() if c.touched else _without_delta(previous)
                for c, previous in zip(self.choices, self.last)
            ]
        first = self.choices[0].request
        errors = [c.request.error for c in self.choices if c.request.error]
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=list(self.last),
            finished=self.finished,
            num_cached_tokens=max(first.num_cached_tokens, 0),
            error=errors[0] if errors else None,
        )


def _without_delta(previous: CompletionOutput) -> CompletionOutput:
    return CompletionOutput(
        index=previous.index,
        text=previous.text,
        token_ids=previous.token_ids,
        logprobs=previous.logprobs,
        cumulative_logprob=previous.cumulative_logprob,
        finish_reason=previous.finish_reason,
        stop_reason=previous.stop_reason,
    )
