"""A second engine with a tiny page budget preempts; its own registry counts the preemptions."""

from __future__ import annotations

import pytest

from esurge_core import SamplingParams, eSurge

from .scrape import parse

pytestmark = pytest.mark.slow

PROMPTS = [
    f"Write a short story about a {animal} who learns to {skill} in the city."
    for animal, skill in [
        ("cat", "paint"),
        ("dog", "sing"),
        ("fox", "cook"),
        ("owl", "dance"),
        ("bear", "swim"),
        ("wolf", "read"),
        ("frog", "skate"),
        ("hare", "juggle"),
    ]
]


@pytest.fixture(scope="module")
def pressured_engine():
    engine = eSurge(
        "smollm2-135m-instruct",
        max_model_len=256,
        max_num_seqs=8,
        max_num_batched_tokens=64,
        page_size=16,
        kv_cache_memory=24 * 720 * 1024,  # about 24 pages of SmolLM2 fp32
    )
    engine.generate(PROMPTS, SamplingParams(max_tokens=48, temperature=0, ignore_eos=True))
    yield engine
    engine.close()


def test_preemptions_under_page_pressure_are_exported(pressured_engine):
    assert pressured_engine.scheduler.num_preemptions > 0
    values = parse(pressured_engine.metrics.render_prometheus().decode())
    assert (
        values[("esurge:num_preemptions_total", ())] == pressured_engine.scheduler.num_preemptions
    )


def test_preempted_requests_still_count_each_prompt_once(pressured_engine):
    values = parse(pressured_engine.metrics.render_prometheus().decode())
    prompt_tokens = sum(len(pressured_engine.tokenizer.encode(p)) for p in PROMPTS)
    assert values[("esurge:prompt_tokens_total", ())] == prompt_tokens
    assert values[("esurge:generation_tokens_total", ())] == 48 * len(PROMPTS)
    assert values[("esurge:request_success_total", (("finished_reason", "length"),))] == 8
