"""Speculative decoding by n-gram prompt lookup changes nothing a caller sees: the same
tokens, text and finish reasons as one token a step (and Hugging Face's greedy tokens), for
every kind of request, under chunked prefill, prefix caching and preemption; it takes fewer
steps where the output repeats, and it leaks no page."""

from __future__ import annotations

import pytest

from esurge_core.sampling.params import SamplingParams
from esurge_core.scheduling.ngram_drafts import NgramDrafter

from .hf_oracle import compare_greedy
from .prompts import RAW_PROMPTS
from .test_async_scheduling import ENGINE, every_kind_of_request, summary

pytestmark = pytest.mark.slow

SPECULATIVE = dict(num_speculative_tokens=4, speculative_max_seqs=16)
#: Greedy SmolLM2 repeats this list within a few tokens.
REPEATING = "red, green, blue, red, green, blue, red, green, blue, red,"


@pytest.fixture(scope="module")
def engines(make_engine):
    return make_engine(**ENGINE, **SPECULATIVE), make_engine(**ENGINE)


def test_every_kind_of_request_gets_what_one_token_a_step_gives(engines):
    speculative, plain = engines
    prompts = [*RAW_PROMPTS[: len(every_kind_of_request()) - 1], REPEATING]
    outputs = speculative.generate(prompts, every_kind_of_request())
    assert speculative.scheduler.num_preemptions > 0
    assert speculative.metrics.snapshot().spec_decode_accepted_tokens > 0
    assert summary(outputs) == summary(plain.generate(prompts, every_kind_of_request()))
    assert speculative.kv_cache.num_free_pages == plain.kv_cache.num_free_pages


def test_a_repeating_greedy_output_takes_fewer_steps_and_streams_every_token(engines):
    speculative = engines[0]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    steps, tokens = [], []
    for engine in engines:
        before = engine.num_steps
        streamed = list(engine.stream(REPEATING, params))
        steps.append(engine.num_steps - before)
        final = streamed[-1].outputs[0]
        assert len(final.token_ids) == 40 and final.finish_reason == "length"
        assert [t for out in streamed for t in out.outputs[0].delta_token_ids] == final.token_ids
        assert "".join(out.outputs[0].delta_text for out in streamed) == final.text
        tokens.append(final.token_ids)
    assert tokens[0] == tokens[1]
    assert steps[0] < steps[1] * 0.7, steps
    snapshot = speculative.metrics.snapshot()
    assert snapshot.spec_decode_draft_tokens >= snapshot.spec_decode_accepted_tokens > 0


def test_greedy_tokens_with_drafts_equal_hf(engines, smollm2_oracle):
    engine = engines[0]
    prompts = [REPEATING, RAW_PROMPTS[11], RAW_PROMPTS[1], RAW_PROMPTS[8]]
    outputs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=32))
    assert engine.metrics.snapshot().spec_decode_accepted_tokens > 0
    for prompt, output in zip(prompts, outputs):
        reference = smollm2_oracle.greedy(engine.tokenizer.encode(prompt), 32)
        assert compare_greedy(output.outputs[0].token_ids, reference) >= 1


def test_drafts_that_are_all_right_or_all_wrong_change_no_token(engines, monkeypatch):
    """Drafts from an oracle (the plain engine's own continuation) are all accepted, drafts
    that are all wrong none, and either way the tokens are the plain engine's; both run
    through steps planned ahead of a pending token (its value assumed by the lookup)."""
    speculative, plain = engines
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    prompt = RAW_PROMPTS[2]
    reference = plain.generate([prompt], params)[0].outputs[0].token_ids
    prompt_len = len(speculative.tokenizer.encode(prompt))
    vocab = len(speculative.tokenizer)
    dispatched = []
    dispatch = speculative.runner.dispatch

    def spy(chunks, previous=None):
        dispatched.extend(chunks)
        return dispatch(chunks, previous)

    monkeypatch.setattr(speculative.runner, "dispatch", spy)
    for shift in (0, 1):

        def continuation(self, request, num_tokens, shift=shift):
            start = request.num_known_tokens - prompt_len
            return [(t + shift) % vocab for t in reference[start : start + num_tokens]]

        monkeypatch.setattr(NgramDrafter, "propose", continuation)
        dispatched.clear()
        assert speculative.generate([prompt], params)[0].outputs[0].token_ids == reference
        with_drafts = [c for c in dispatched if c.draft_token_ids]
        assert with_drafts and any(c.assumed_token is not None for c in with_drafts)
        accepted = sum(c.num_accepted_drafts for c in with_drafts)
        drafted = sum(len(c.draft_token_ids) for c in with_drafts)
        assert accepted == (drafted if shift == 0 else 0)
