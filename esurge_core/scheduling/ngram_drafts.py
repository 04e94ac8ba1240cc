"""Draft tokens for speculative decoding by n-gram prompt lookup (vLLM's ``ngram`` method,
HF's ``prompt_lookup_num_tokens``).

A request's next tokens often repeat something it has already seen: a name from the prompt,
a line of code being edited, or the loop a small model falls into. The drafter finds the
most recent earlier occurrence of the request's last ``n`` tokens (longest ``n`` first, from
``prompt_lookup_max`` down to ``prompt_lookup_min``) and proposes the tokens that followed
it. The step then computes the last token and the drafts together, the model's greedy token
after each position is sampled, and the drafts are accepted while they equal those tokens
(``accepted_drafts``): the output is greedy decoding's, one token a step's, while a
step that reads the weights once yields up to ``1 + k`` tokens.

Each request keeps an ``NgramIndex``: the last position of every n-gram of its known tokens,
updated by the tokens added since the last lookup, so a lookup costs the same at any length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from esurge_core.engine.request import Request


class NgramIndex:
    """Where each n-gram (``min_n <= n <= max_n``) of a token sequence last occurred, with at
    least one token after it."""

    __slots__ = ("_continuations", "_num_indexed", "max_n", "min_n")

    def __init__(self, min_n: int, max_n: int) -> None:
        self.min_n = min_n
        self.max_n = max_n
        # n-gram -> index of the token that followed its last occurrence.
        self._continuations: dict[tuple[int, ...], int] = {}
        self._num_indexed = 1  # continuation indices below this are indexed

    def _extend(self, tokens: Sequence[int], num_known: int) -> None:
        """Index the n-grams followed by a token at index ``[_num_indexed, num_known)``."""
        continuations = self._continuations
        for follower in range(self._num_indexed, num_known):
            for n in range(self.min_n, min(self.max_n, follower) + 1):
                continuations[tuple(tokens[follower - n : follower])] = follower
        self._num_indexed = max(self._num_indexed, num_known)

    def propose(self, tokens: Sequence[int], num_known: int, num_drafts: int) -> list[int]:
        """Up to ``num_drafts`` tokens that followed the latest earlier occurrence of the
        longest matching tail of ``tokens[:num_known]``; empty when no tail recurs.

        Where the occurrence runs into the tail itself (a loop shorter than ``num_drafts``),
        the draft continues the loop.
        """
        if num_drafts <= 0:
            return []
        self._extend(tokens, num_known)
        for n in range(min(self.max_n, num_known - 1), self.min_n - 1, -1):
            follower = self._continuations.get(tuple(tokens[num_known - n : num_known]))
            if follower is None:
                continue
            drafts: list[int] = []
            for index in range(follower, follower + num_drafts):
                drafts.append(tokens[index] if index < num_known else drafts[index - num_known])
            return drafts
        return []


def accepted_drafts(drafts: Sequence[int], sampled: Sequence[int]) -> int:
    """How many leading ``drafts`` the step's greedy tokens confirm.

    ``sampled[j]`` is the model's token after the step's ``j``-th input (the last known token,
    then the drafts), so draft ``j`` stands while it equals ``sampled[j - 1]``.
    """
    accepted = 0
    for draft, token in zip(drafts, sampled):
        if draft != token:
            break
        accepted += 1
    return accepted


@dataclass(frozen=True, slots=True)
class NgramDrafter:
    """Proposes each eligible request's drafts for a step (see the module docstring).

    Args:
        num_speculative_tokens: most drafts per request and step.
        prompt_lookup_min / prompt_lookup_max: the n-gram lengths tried (longest first).
        max_seqs: draft only in steps of at most this many requests.
    """

    num_speculative_tokens: int
    prompt_lookup_min: int
    prompt_lookup_max: int
    max_seqs: int

    def may_draft(self, request: Request) -> bool:
        """Whether ``request``'s sampling allows verifying drafts: greedy, without penalties,
        logit bias or log-probabilities, and past ``min_tokens`` (each draft row is sampled
        as the request's next row would be)."""
        params = request.sampling_params
        return (
            params.greedy
            and not params.uses_penalties
            and not params.logit_bias
            and params.logprobs is None
            and request.num_output_tokens >= params.min_tokens
        )

    def propose(self, request: Request, num_tokens: int) -> list[int]:
        """Up to ``num_tokens`` tokens that may follow ``request``'s known tokens (a pending
        last token excluded)."""
        index = request.ngram_index
        if index is None:
            index = request.ngram_index = NgramIndex(self.prompt_lookup_min, self.prompt_lookup_max)
        return index.propose(request.token_ids_view, request.num_known_tokens, num_tokens)
