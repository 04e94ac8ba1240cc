"""Gemma 3 270M (five sliding-window layers to one global, window 512): a prompt longer than
the window gives HF's greedy tokens alone and in a batch."""

from __future__ import annotations

import pytest

from esurge_core.sampling.params import SamplingParams

from .hf_oracle import compare_greedy
from .prompts import RAW_PROMPTS

pytestmark = pytest.mark.slow

MAX_TOKENS = 32
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)


def long_prompt(tokenizer) -> str:
    paragraph = (
        "The lighthouse keeper wrote in his log every evening: the weather, the ships that "
        "passed, the state of the lamp and the oil that remained. "
    )
    text = ""
    while len(tokenizer.encode(text)) < 600:
        text += paragraph
    return text + "On the last page of the log he wrote:"


@pytest.fixture(scope="module")
def gemma_engine(make_engine):
    return make_engine(
        "gemma3-270m",
        page_size=16,
        max_num_batched_tokens=256,
        max_num_seqs=4,
        max_model_len=1024,
        kv_cache_memory=512 << 20,
    )


def test_gemma3_declares_sliding_and_full_groups(gemma_engine):
    patterns = sorted(g.pattern for g in gemma_engine.model.kv_cache_groups())
    assert patterns == ["full", "sliding_window"]


def test_prompt_longer_than_the_window_equals_hf_alone_and_in_a_batch(gemma_engine, gemma3_oracle):
    prompt = long_prompt(gemma_engine.tokenizer)
    ids = gemma_engine.tokenizer.encode(prompt)
    assert len(ids) > 512
    reference = gemma3_oracle.greedy(ids, MAX_TOKENS)
    alone = gemma_engine.generate([prompt], GREEDY)[0]
    assert compare_greedy(alone.outputs[0].token_ids, reference) >= 1
    batch = gemma_engine.generate([RAW_PROMPTS[0], prompt, RAW_PROMPTS[2]], GREEDY)
    assert compare_greedy(batch[1].outputs[0].token_ids, reference) >= 1
    for index in (0, 2):
        short_ids = gemma_engine.tokenizer.encode(RAW_PROMPTS[index])
        compare_greedy(
            batch[index].outputs[0].token_ids, gemma3_oracle.greedy(short_ids, MAX_TOKENS)
        )


def test_eight_prompts_in_one_batch_equal_hf_for_32_tokens(gemma_engine, gemma3_oracle):
    prompts = [*RAW_PROMPTS[:7], long_prompt(gemma_engine.tokenizer)]
    outputs = gemma_engine.generate(prompts, GREEDY)
    for prompt, output in zip(prompts, outputs):
        ids = gemma_engine.tokenizer.encode(prompt)
        assert output.prompt_token_ids == ids
        assert (
            compare_greedy(output.outputs[0].token_ids, gemma3_oracle.greedy(ids, MAX_TOKENS)) >= 1
        )
