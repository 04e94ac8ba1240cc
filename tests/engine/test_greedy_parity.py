"""Greedy outputs of the paged engine equal Hugging Face transformers, token for token, with
chunked prefill, prefix caching, preemption and mixed greedy/sampled batches."""

from __future__ import annotations

import pytest

from esurge_core.sampling.params import SamplingParams

from .hf_oracle import compare_greedy
from .prompts import CHAT_QUESTIONS, RAW_PROMPTS, SYSTEM_PROMPT

pytestmark = pytest.mark.slow

MAX_TOKENS = 32
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)


def chat_prompts(engine, system: str | None = None) -> list[dict]:
    prompts = []
    for question in CHAT_QUESTIONS:
        messages = [{"role": "user", "content": question}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        prompts.append({"prompt_token_ids": engine.apply_chat_template(messages)})
    return prompts


def all_prompt_ids(engine, prompts) -> list[list[int]]:
    return [
        engine.tokenizer.encode(p) if isinstance(p, str) else p["prompt_token_ids"] for p in prompts
    ]


def assert_matches_hf(engine, oracle, prompts, outputs) -> None:
    assert [o.request_id for o in outputs] == sorted(
        (o.request_id for o in outputs), key=lambda r: int(r.split("-")[1])
    )
    for ids, output in zip(all_prompt_ids(engine, prompts), outputs):
        assert output.prompt_token_ids == ids
        reference = oracle.greedy(ids, MAX_TOKENS)
        compared = compare_greedy(output.outputs[0].token_ids, reference)
        assert compared >= 1


@pytest.fixture(scope="module")
def chunked_engine(make_engine):
    return make_engine(
        page_size=16,
        max_num_batched_tokens=64,
        max_num_seqs=16,
        max_model_len=512,
        enable_prefix_caching=False,
    )


def test_sixteen_prompts_together_with_chunked_prefill_equal_hf_alone(
    chunked_engine, smollm2_oracle
):
    prompts = RAW_PROMPTS + chat_prompts(chunked_engine)
    assert len(prompts) == 16
    assert max(len(ids) for ids in all_prompt_ids(chunked_engine, prompts)) > 64
    outputs = chunked_engine.generate(prompts, GREEDY)
    assert_matches_hf(chunked_engine, smollm2_oracle, prompts, outputs)


def test_prefix_caching_with_a_shared_system_prompt_equals_hf_and_hits(make_engine, smollm2_oracle):
    engine = make_engine(
        page_size=16, max_num_batched_tokens=64, max_num_seqs=16, max_model_len=512
    )
    prompts = chat_prompts(engine, SYSTEM_PROMPT)
    first = engine.generate(prompts[:1], GREEDY)
    rest = engine.generate(prompts[1:], GREEDY)
    assert engine.kv_cache.stats().prefix_cache_hits > 0
    assert all(o.num_cached_tokens >= 64 for o in rest)
    assert_matches_hf(engine, smollm2_oracle, prompts, first + rest)


def test_preemption_under_a_small_page_budget_keeps_greedy_outputs_equal_to_hf(
    make_engine, smollm2_oracle
):
    engine = make_engine(
        page_size=16,
        max_num_batched_tokens=64,
        max_num_seqs=16,
        max_model_len=256,
        kv_cache_memory=24 * 720 * 1024,  # about 24 pages of SmolLM2 fp32
    )
    prompts = RAW_PROMPTS
    outputs = engine.generate(prompts, GREEDY)
    assert engine.scheduler.num_preemptions > 0
    assert_matches_hf(engine, smollm2_oracle, prompts, outputs)


def test_greedy_rows_stay_exact_in_a_batch_mixed_with_sampled_rows(chunked_engine, smollm2_oracle):
    prompts = RAW_PROMPTS[:6]
    sampled = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=7, max_tokens=MAX_TOKENS)
    params = [GREEDY if i % 2 == 0 else sampled for i in range(len(prompts))]
    outputs = chunked_engine.generate(prompts, params)
    for index in range(0, len(prompts), 2):
        ids = chunked_engine.tokenizer.encode(prompts[index])
        compare_greedy(outputs[index].outputs[0].token_ids, smollm2_oracle.greedy(ids, MAX_TOKENS))
    assert all(len(o.outputs[0].token_ids) > 0 for o in outputs)
