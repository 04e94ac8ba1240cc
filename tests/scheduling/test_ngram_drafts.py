"""Speculative drafts by n-gram prompt lookup: the index, the acceptance rule, and how the
scheduler hands drafts out (limits, who may draft, the pages they take)."""

from __future__ import annotations

import pytest
from esurge_schedulers.fcfs import FCFSPolicy

from esurge_core.engine.request import PENDING_TOKEN, JoinedTokenIds, Request
from esurge_core.kv_cache import KVCacheGroupSpec, KVCacheManager
from esurge_core.sampling.params import SamplingParams
from esurge_core.scheduling.ngram_drafts import NgramDrafter, NgramIndex, accepted_drafts
from esurge_core.scheduling.scheduler import Scheduler

GREEDY = SamplingParams(temperature=0, max_tokens=32)


def propose(tokens: list[int], num_drafts: int, min_n: int = 1, max_n: int = 4) -> list[int]:
    return NgramIndex(min_n, max_n).propose(tokens, len(tokens), num_drafts)


def brute_force(tokens: list[int], num_drafts: int, min_n: int, max_n: int) -> list[int]:
    """The lookup by its definition: latest earlier match of the longest tail."""
    for n in range(min(max_n, len(tokens) - 1), min_n - 1, -1):
        tail = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start : start + n] == tail:
                extended = list(tokens)
                follower = start + n
                while len(extended) < follower + num_drafts:
                    extended.append(extended[len(extended) - (len(tokens) - follower)])
                return extended[follower : follower + num_drafts]
    return []


def test_the_longest_recurring_tail_proposes_what_followed_it_last():
    tokens = [5, 6, 7, 1, 2, 9, 5, 6, 7, 3, 4, 8, 6, 7]
    # "6 7" ends the sequence; its latest earlier occurrence is followed by 3 4 8 ...
    assert propose(tokens, 3) == [3, 4, 8]
    assert propose(tokens, 3, min_n=3) == []  # "8 6 7" never occurred before
    assert propose([1, 2, 3], 2) == []  # no tail recurs


def test_a_loop_shorter_than_the_drafts_continues_as_a_loop():
    assert propose([9, 1, 2, 1, 2], 5) == [1, 2, 1, 2, 1]


def test_the_index_agrees_with_a_brute_force_lookup_as_tokens_arrive():
    import random

    rng = random.Random(0)
    for trial in range(30):
        min_n, max_n = rng.randint(1, 3), rng.randint(3, 5)
        index = NgramIndex(min_n, max_n)
        tokens = [rng.randrange(4) for _ in range(rng.randint(1, 5))]
        for _ in range(40):
            drafts = index.propose(tokens, len(tokens), 4)
            assert drafts == brute_force(tokens, 4, min_n, max_n), (trial, tokens)
            tokens += [rng.randrange(4) for _ in range(rng.randint(1, 3))]


def test_drafts_stand_while_they_equal_the_tokens_sampled_before_them():
    assert accepted_drafts([4, 5, 6], [4, 5, 6, 7]) == 3
    assert accepted_drafts([4, 5, 6], [4, 9, 6, 7]) == 1
    assert accepted_drafts([4, 5, 6], [1, 5, 6, 7]) == 0


def test_joined_token_ids_with_drafts_reads_them_after_the_known_tokens():
    tokens = JoinedTokenIds([1, 2], [3], drafts=[7, 8])
    assert len(tokens) == 5 and list(tokens) == [1, 2, 3, 7, 8]
    assert tokens[1:4] == [2, 3, 7] and tokens[3:] == [7, 8] and tokens[-1] == 8


def make_request(request_id: str, prompt: list[int], params=GREEDY, max_tokens=32) -> Request:
    return Request(request_id, prompt, params, arrival_time=0.0, seed=0, max_tokens=max_tokens)


def make_scheduler(max_num_seqs=8, max_model_len=64, drafts=4, max_seqs=2, budget=64):
    kv_cache = KVCacheManager((KVCacheGroupSpec("full", (0,)),), num_pages=64, page_size=4)
    drafter = NgramDrafter(drafts, 1, 4, max_seqs)
    return Scheduler(
        FCFSPolicy(),
        kv_cache,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=budget,
        max_model_len=max_model_len,
        drafter=drafter,
    )


def decode_ready(scheduler: Scheduler, request: Request, first_token: int) -> None:
    """Prefill ``request`` and give it its first token, as the engine would."""
    scheduler.add_request(request)
    (chunk,) = scheduler.schedule().chunks
    assert chunk.num_new_tokens == request.num_prompt_tokens and not chunk.draft_token_ids
    request.output_token_ids.append(first_token)


LOOP = [1, 2, 3, 1, 2, 3, 1, 2]  # next: 3 1 2 3 ...


def test_a_decoding_greedy_request_gets_drafts_and_their_pages():
    scheduler = make_scheduler()
    request = make_request("a", LOOP)
    decode_ready(scheduler, request, 3)
    (chunk,) = scheduler.schedule().chunks
    assert list(chunk.draft_token_ids) == [1, 2, 3, 1]
    assert (chunk.start, chunk.num_new_tokens, chunk.samples) == (8, 5, True)
    # Pages for the drafts' positions too (13 tokens of 4 per page), none published.
    assert len(scheduler.kv_cache.page_ids("a")[0]) == 4


@pytest.mark.parametrize(
    ("max_tokens", "max_model_len", "budget", "expected"),
    [
        (3, 64, 64, 1),  # one output, up to 3: the step may add 2, so 1 draft
        (32, 11, 64, 2),  # 9 tokens in an 11-token limit: positions 8..10 hold 2 drafts
        (32, 64, 3, 2),  # a 3-token budget: the known token and 2 drafts
    ],
)
def test_drafts_stop_at_max_tokens_max_model_len_and_the_budget(
    max_tokens, max_model_len, budget, expected
):
    scheduler = make_scheduler(max_model_len=max_model_len)
    request = make_request("a", LOOP, max_tokens=max_tokens)
    decode_ready(scheduler, request, 3)
    scheduler.max_num_batched_tokens = budget
    (chunk,) = scheduler.schedule().chunks
    assert len(chunk.draft_token_ids) == expected


def test_no_drafts_for_sampled_or_penalised_requests_nor_before_min_tokens():
    for params in (
        SamplingParams(temperature=0.7, max_tokens=32),
        SamplingParams(temperature=0, repetition_penalty=1.2, max_tokens=32),
        SamplingParams(temperature=0, logprobs=1, max_tokens=32),
        SamplingParams(temperature=0, logit_bias={3: 1.0}, max_tokens=32),
        SamplingParams(temperature=0, min_tokens=5, max_tokens=32),
    ):
        scheduler = make_scheduler()
        request = make_request("a", LOOP, params)
        decode_ready(scheduler, request, 3)
        (chunk,) = scheduler.schedule().chunks
        assert not chunk.draft_token_ids, params


def test_after_a_pending_token_the_drafts_assume_the_lookups_first_token():
    scheduler = make_scheduler()
    request = make_request("a", LOOP)
    decode_ready(scheduler, request, PENDING_TOKEN)
    (chunk,) = scheduler.schedule().chunks
    # The lookup continues the known tokens "... 1 2" with 3 1 2 3 1: 3 stands for the
    # pending token and the four after it are the drafts.
    assert chunk.assumed_token == 3 and list(chunk.draft_token_ids) == [1, 2, 3, 1]
    assert (chunk.start, chunk.num_new_tokens) == (8, 5)


def test_no_drafts_with_too_many_running_or_anyone_waiting():
    scheduler = make_scheduler(max_seqs=1)
    request = make_request("a", LOOP)
    decode_ready(scheduler, request, 3)
    other = make_request("b", [9, 9, 9])
    scheduler.add_request(other)  # waiting at the start of the plan
    assert not any(c.draft_token_ids for c in scheduler.schedule().chunks)
    request.output_token_ids.append(3)
    other.output_token_ids.append(9)
    assert len(scheduler.running) == 2  # more than max_seqs
    assert not any(c.draft_token_ids for c in scheduler.schedule().chunks)


def test_drafts_never_make_a_step_sample_more_rows_than_max_num_seqs():
    scheduler = make_scheduler(max_num_seqs=4, max_seqs=4)
    requests = [make_request(name, LOOP) for name in "ab"]
    for request in requests:
        scheduler.add_request(request)
    scheduler.schedule()
    for request in requests:
        request.output_token_ids.append(3)
    chunks = scheduler.schedule().chunks
    rows = sum(1 + len(c.draft_token_ids) for c in chunks)
    assert rows == 4  # two requests, two draft rows between them
