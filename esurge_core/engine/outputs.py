"""What callers receive: vLLM-shaped ``RequestOutput`` and ``CompletionOutput``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenLogprob:
    """The log-probability of one generated token and the most likely alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass(slots=True)
class CompletionOutput:
    """One choice of a request (``n`` of them for ``n > 1``).

    ``text``/``token_ids`` are cumulative; ``delta_text``/``delta_token_ids`` hold only what
    the latest step added (what a stream emits).
    """

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    delta_text: str = ""
    delta_token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    @property
    def finished(self) -> bool:
        """Whether this choice has ended."""
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestOutput:
    """A snapshot of a request after a step.

    Attributes:
        request_id: the id given at ``add_request``.
        prompt: the prompt text, when the request was given as text.
        prompt_token_ids: the tokenised prompt.
        outputs: one ``CompletionOutput`` per choice.
        finished: every choice has ended.
        num_cached_tokens: prompt tokens served from the prefix cache.
        error: why the request failed, when ``finish_reason == "error"``.
    """

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    num_cached_tokens: int = 0
    error: str | None = None

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt length (for usage)."""
        return len(self.prompt_token_ids)

    @property
    def num_generated_tokens(self) -> int:
        """Tokens generated over all choices (for usage)."""
        return sum(len(o.token_ids) for o in self.outputs)
