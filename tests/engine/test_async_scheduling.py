"""Asynchronous scheduling (step N+1 planned and queued while step N runs) changes nothing a
caller sees: the same tokens, text, finish reasons and log-probs as waiting for each step, for
every kind of request, under chunked prefill, prefix caching and preemption; and it leaks no
page and no placeholder token."""

from __future__ import annotations

import pytest

from esurge_core.engine import esurge
from esurge_core.engine.request import PENDING_TOKEN
from esurge_core.sampling.params import SamplingParams

from .prompts import RAW_PROMPTS

pytestmark = pytest.mark.slow

ENGINE = dict(
    page_size=16,
    max_num_batched_tokens=64,
    max_num_seqs=16,
    max_model_len=160,
    kv_cache_memory=12 * 720 * 1024,  # 11 pages of SmolLM2 fp32: preemption happens
    # One bucket for every step (64 tokens, 16 sequences, 10 pages each). Planning ahead
    # changes which requests share a step, and a request's logits are equal to the last bit
    # across batch compositions only when every step has the same padded shape: with the
    # default buckets a seeded request sampled alone and in the batch already differed on a
    # Zen 4 CPU, without planning ahead (the products pick their paths and blocking by shape).
    min_input_pad=64,
)


def every_kind_of_request() -> list[SamplingParams]:
    greedy = dict(temperature=0.0)
    return [
        SamplingParams(max_tokens=1, **greedy),
        SamplingParams(max_tokens=2, **greedy),
        SamplingParams(max_tokens=28, ignore_eos=True, **greedy),
        SamplingParams(max_tokens=24, stop=[".", "\n"], **greedy),
        SamplingParams(max_tokens=24, stop=[" the"], include_stop_str_in_output=True, **greedy),
        SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=11),
        SamplingParams(
            max_tokens=20,
            repetition_penalty=1.5,
            presence_penalty=0.5,
            frequency_penalty=0.3,
            **greedy,
        ),
        SamplingParams(max_tokens=20, logprobs=2, **greedy),
        SamplingParams(max_tokens=12, min_tokens=8, stop_token_ids=[13, 30], **greedy),
        SamplingParams(n=2, max_tokens=16, temperature=0.9, seed=5),
        SamplingParams(max_tokens=32, ignore_eos=True, **greedy),
        SamplingParams(max_tokens=3, **greedy),
    ]


def summary(outputs) -> list:
    return [
        [
            (
                choice.token_ids,
                choice.text,
                choice.finish_reason,
                None if choice.logprobs is None else [lp.logprob for lp in choice.logprobs],
            )
            for choice in output.outputs
        ]
        for output in outputs
    ]


@pytest.fixture(scope="module")
def engines(make_engine):
    return make_engine(**ENGINE, async_scheduling=True), make_engine(
        **ENGINE, async_scheduling=False
    )


def test_async_scheduling_gives_what_waiting_for_each_step_gives(engines):
    planned_ahead, waiting = engines
    assert not waiting.async_scheduling
    prompts = RAW_PROMPTS[: len(every_kind_of_request())]
    ahead = planned_ahead.generate(prompts, every_kind_of_request())
    assert planned_ahead.scheduler.num_preemptions > 0
    assert summary(ahead) == summary(waiting.generate(prompts, every_kind_of_request()))
    for output in ahead:
        assert all(PENDING_TOKEN not in c.token_ids for c in output.outputs)
    assert planned_ahead.kv_cache.num_free_pages == waiting.kv_cache.num_free_pages


def spy_dispatches(engine, monkeypatch) -> list[tuple[set[str], bool]]:
    """Per dispatched step: the parent ids it carries, and whether it fed pending tokens."""
    calls: list[tuple[set[str], bool]] = []
    dispatch = engine.runner.dispatch

    def spy(chunks, previous=None):
        fed = any(c.request.has_pending_token for c in chunks)
        calls.append(({c.request.parent_id for c in chunks}, fed))
        return dispatch(chunks, previous)

    monkeypatch.setattr(engine.runner, "dispatch", spy)
    return calls


def test_decode_steps_are_queued_before_the_previous_tokens_are_back(engines, monkeypatch):
    engine = engines[0]
    calls = spy_dispatches(engine, monkeypatch)
    engine.generate([RAW_PROMPTS[0]], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    assert len(calls) == 16  # the prefill and 15 decodes: no step wasted on the last token
    assert all(fed for _, fed in calls[1:])  # every decode fed its token from the device


def test_by_default_on_cpu_only_steps_of_few_sequences_are_planned_ahead_of(
    make_engine, monkeypatch
):
    engine = make_engine(**ENGINE)  # async_scheduling left to the platform
    assert engine.async_scheduling and engine.plan_ahead_max_seqs == esurge.CPU_PLAN_AHEAD_MAX_SEQS
    monkeypatch.setattr(engine, "plan_ahead_max_seqs", 2)
    calls = spy_dispatches(engine, monkeypatch)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    engine.generate(RAW_PROMPTS[:2], params)  # two sequences a step: planned ahead of
    assert len(calls) > 1 and all(fed for _, fed in calls[1:])
    calls.clear()
    engine.generate(RAW_PROMPTS[:3], params)  # three: each step waits for the last one
    assert len(calls) > 1 and not any(fed for _, fed in calls)


def test_penalties_wait_for_the_previous_tokens(engines, monkeypatch):
    engine = engines[0]
    calls = spy_dispatches(engine, monkeypatch)
    params = SamplingParams(temperature=0, max_tokens=8, repetition_penalty=1.3, ignore_eos=True)
    engine.generate([RAW_PROMPTS[1]], params)
    assert len(calls) == 8
    assert not any(fed for _, fed in calls)


def test_abort_with_a_step_in_flight_frees_every_page_and_keeps_no_placeholder(make_engine):
    engine = make_engine(**ENGINE, async_scheduling=True)  # driven by hand: no loop thread
    free_before = engine.kv_cache.num_free_pages
    params = SamplingParams(temperature=0, max_tokens=100, ignore_eos=True)
    engine.add_request(RAW_PROMPTS[2], params, request_id="aborted")
    applied = []
    for _ in range(4):
        applied += engine.step()
    assert engine._in_flight is not None
    engine.abort("aborted")
    while engine.has_unfinished_requests():
        applied += engine.step()
    final = applied[-1].outputs[0]
    assert applied[-1].finished and final.finish_reason == "abort"
    assert PENDING_TOKEN not in final.token_ids
    assert len(final.token_ids) == len(
        [t for output in applied for t in output.outputs[0].delta_token_ids]
    )
    assert engine.kv_cache.num_free_pages == free_before
