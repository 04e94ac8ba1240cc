"""One engine step's plan: which requests compute how many tokens (vLLM v1's rule).

Every request has ``num_computed_tokens`` and ``num_tokens``; a step hands out tokens to close
that gap under ``max_num_batched_tokens`` and ``max_num_seqs``:

1. if the best waiting request may preempt a running one (priority policies), do it;
2. running requests first (decodes and continuing chunked prefills), in order; when pages run
   out, the policy picks a victim among those not yet scheduled this step, its pages are freed
   and it goes back to the waiting queue for recompute (its full pages stay hashed, so it
   mostly hits the prefix cache when it returns);
3. then waiting requests in the policy's order (prefix-cache lookup, then a chunk of the
   remaining budget), unless this step preempted.

``num_computed_tokens`` advances at schedule time, so the next step can be planned from
this state, even before the running step's tokens are back: a request whose last token is
still being sampled (``PENDING_TOKEN``, asynchronous scheduling) decodes it in the next step
like any other, and one that will certainly end with that token (``max_tokens`` reached)
holds no pending token and is skipped until it is back. The policy (a plugin) only orders;
the mechanics live here.

With a drafter (speculative decoding, ``ngram_drafts``), a decoding greedy request may also
compute draft tokens after its last one, while the step has at most ``drafter.max_seqs``
requests and none waits: its chunk carries them and the engine moves ``num_computed_tokens``
back to what the step's tokens confirm. When the last token is still pending, the lookup
runs over the known tokens and its first token stands for the pending one
(``assumed_token``): the drafts after it count only if the pending token is that one.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from esurge_core.engine.request import FinishReason, JoinedTokenIds, Request, RequestStatus
from esurge_core.kv_cache.manager import KVCacheManager
from esurge_core.scheduling.ngram_drafts import NgramDrafter
from esurge_core.scheduling.policy import SchedulingPolicy


@dataclass(slots=True)
class ScheduledChunk:
    """``num_new_tokens`` tokens of ``request`` starting at ``start`` run in this step.

    ``samples`` is true when the chunk reaches the request's last known token, so the step
    produces its next token (a partial prefill chunk does not). ``draft_token_ids`` are the
    chunk's last tokens when it verifies drafts: the step samples after each of them too;
    ``assumed_token`` is the value the drafts assume for a pending token before them (else
    ``None``); ``num_accepted_drafts`` is how many drafts its tokens confirmed and became output
    (set when applied).
    """

    request: Request
    start: int
    num_new_tokens: int
    samples: bool
    draft_token_ids: Sequence[int] = ()
    assumed_token: int | None = None
    num_accepted_drafts: int = 0


@dataclass(slots=True)
class SchedulerOutput:
    """The plan of one step."""

    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    num_scheduled_tokens: int = 0

    @property
    def is_empty(self) -> bool:
        """Nothing to run this step."""
        return not self.chunks


class Scheduler:
    """Plans steps for a set of requests over a KV-cache manager.

    Args:
        policy: ordering decisions (admission order, preemption victim).
        kv_cache: the page allocator.
        max_num_seqs: most requests in one step.
        max_num_batched_tokens: token budget of one step.
        max_model_len: longest prompt + output.
        enable_chunked_prefill: split long prompts over steps (else a prompt runs whole).
        enable_preemption: preempt under page pressure (else the request that cannot get
            pages fails with ``finish_reason="error"``... only when nothing else can free).
        drafter: proposes speculative draft tokens (``None``: none).
    """

    def __init__(
        self,
        policy: SchedulingPolicy,
        kv_cache: KVCacheManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        enable_chunked_prefill: bool = True,
        enable_preemption: bool = True,
        drafter: NgramDrafter | None = None,
    ) -> None:
        self.policy = policy
        self.kv_cache = kv_cache
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.enable_chunked_prefill = enable_chunked_prefill
        self.enable_preemption = enable_preemption
        self.drafter = drafter
        self.running: list[Request] = []
        self._waiting: list[tuple[object, int, Request]] = []
        self._tiebreak = itertools.count()
        self.num_preemptions = 0

    # ------------------------------------------------------------------ queue

    @property
    def waiting(self) -> list[Request]:
        """Waiting requests in admission order."""
        return [entry[2] for entry in self._waiting]

    @property
    def num_unfinished(self) -> int:
        """Requests waiting or running."""
        return len(self._waiting) + len(self.running)

    def add_request(self, request: Request) -> None:
        """Queue a new (or preempted) request in the policy's admission order."""
        request.status = (
            RequestStatus.PREEMPTED if request.num_preemptions else RequestStatus.WAITING
        )
        key = self.policy.admission_key(request)
        bisect.insort(self._waiting, (key, next(self._tiebreak), request), key=lambda e: e[:2])

    def finish_requests(self, requests: Iterable[Request], reason: FinishReason) -> None:
        """End requests wherever they are (idempotent), freeing their pages."""
        for request in requests:
            if request in self.running:
                self.running.remove(request)
            elif any(entry[2] is request for entry in self._waiting):
                self._waiting = [e for e in self._waiting if e[2] is not request]
            if request.request_id in self.kv_cache:
                self.kv_cache.free(request.request_id)
            request.finish(reason)

    # ------------------------------------------------------------------ step

    def schedule(self) -> SchedulerOutput:
        """Plan one step (see the module docstring for the rules)."""
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        self._preempt_for_waiting(out)
        scheduled_running: list[Request] = []
        unscheduled = list(self.running)
        # Each draft adds a sampled row, and a step samples at most max_num_seqs rows.
        draft_rows = self.max_num_seqs - len(self.running) if self._drafts_this_step() else 0
        while unscheduled and budget > 0:
            request = unscheduled.pop(0)
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if num_new <= 0:  # waiting for a sampled token that is not back yet
                scheduled_running.append(request)
                continue
            limit = min(draft_rows, budget - 1) if num_new == 1 else 0
            drafts, assumed = self._drafts(request, limit)
            if drafts and self._allocate(request, 1 + len(drafts), drafts):
                scheduled_running.append(request)
                chunk = self._commit(request, 1 + len(drafts), drafts)
                chunk.assumed_token = assumed
                out.chunks.append(chunk)
                budget -= 1 + len(drafts)
                draft_rows -= len(drafts)
                continue
            while not self._allocate(request, num_new):
                victim = self.policy.choose_victim([*unscheduled, request])
                self._preempt(victim, out)
                if victim is request:
                    break
                unscheduled.remove(victim)
            else:
                scheduled_running.append(request)
                out.chunks.append(self._commit(request, num_new))
                budget -= num_new
        # Requests not reached this step (budget exhausted) stay running, in order.
        self.running = scheduled_running + unscheduled
        if not out.preempted:
            budget = self._admit_waiting(out, budget)
        out.num_scheduled_tokens = self.max_num_batched_tokens - budget
        return out

    def _drafts_this_step(self) -> bool:
        """Whether the next plan may give running requests drafts (a drafter, at most its
        ``max_seqs`` requests running, and none waiting)."""
        drafter = self.drafter
        return drafter is not None and not self._waiting and len(self.running) <= drafter.max_seqs

    def _drafts(self, request: Request, limit: int) -> tuple[list[int], int | None]:
        """Drafts for a decoding ``request`` (at most ``limit``, none past its ``max_tokens``
        or ``max_model_len``; empty when it may not draft), and the value they assume for
        its pending token (``None``: no pending token)."""
        drafter = self.drafter
        if limit <= 0 or drafter is None or not drafter.may_draft(request):
            return [], None
        limit = min(
            limit,
            drafter.num_speculative_tokens,
            request.max_tokens - request.num_output_tokens - 1,
            self.max_model_len - request.num_tokens,
        )
        if limit <= 0:
            return [], None
        if not request.has_pending_token:
            return drafter.propose(request, limit), None
        lookup = drafter.propose(request, limit + 1)
        return (lookup[1:], lookup[0]) if len(lookup) > 1 else ([], None)

    def _admit_waiting(self, out: SchedulerOutput, budget: int) -> int:
        while self._waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            request = self._waiting[0][2]
            if request.num_computed_tokens == 0:
                cached = self.kv_cache.lookup_prefix(
                    request.request_id, request.token_ids_view, cache_salt=request.cache_salt
                )
                request.num_computed_tokens = cached
                if request.num_cached_tokens < 0:
                    request.num_cached_tokens = cached
            remaining = request.num_tokens - request.num_computed_tokens
            if not self.enable_chunked_prefill and remaining > budget:
                break
            num_new = min(remaining, budget)
            if not self._allocate(request, num_new):
                # Look the prefix up again next time: its cached pages may be evicted
                # while the request waits.
                request.num_computed_tokens = 0
                break
            self._waiting.pop(0)
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            out.chunks.append(self._commit(request, num_new))
            budget -= num_new
        return budget

    def _preempt_for_waiting(self, out: SchedulerOutput) -> None:
        """Let the best waiting request displace a less important running one."""
        if not self._waiting or not self.running or not self.enable_preemption:
            return
        candidate = self._waiting[0][2]
        victim = self.policy.choose_victim(self.running)
        if not self.policy.may_preempt_for(candidate, victim):
            return
        pages_needed = -(
            -min(candidate.num_tokens, self.max_num_batched_tokens) // self.kv_cache.page_size
        )
        pages_needed *= len(self.kv_cache.groups)
        if len(self.running) >= self.max_num_seqs or self.kv_cache.num_free_pages < pages_needed:
            self.running.remove(victim)
            self._preempt(victim, out)

    def _allocate(self, request: Request, num_new: int, drafts: Sequence[int] = ()) -> bool:
        tokens = (
            JoinedTokenIds(request.prompt_token_ids, request.output_token_ids, drafts)
            if drafts
            else request.token_ids_view
        )
        return self.kv_cache.allocate(
            request.request_id,
            tokens,
            request.num_computed_tokens,
            num_new,
            cache_salt=request.cache_salt,
            num_known_tokens=request.num_known_tokens,
        )

    def _commit(self, request: Request, num_new: int, drafts: Sequence[int] = ()) -> ScheduledChunk:
        start = request.num_computed_tokens
        request.num_computed_tokens = start + num_new
        samples = request.num_computed_tokens == request.num_tokens + len(drafts)
        return ScheduledChunk(request, start, num_new, samples, drafts)

    def _preempt(self, request: Request, out: SchedulerOutput) -> None:
        self.kv_cache.free(request.request_id)
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        out.preempted.append(request)
        if not self.enable_preemption:
            request.finish(FinishReason.ERROR)
            request.error = "out of KV-cache pages and preemption is disabled"
            return
        self.add_request(request)
