"""A real engine under a known workload, scraped over HTTP: the counts match the workload.

One engine for the module; the workload runs once in three phases (a request that ends by
length, the same prompt again ending at a stop token, a stream closed after its first output)
and each phase is scraped, so each test checks one phase's deltas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from esurge_core import SamplingParams, eSurge
from esurge_core.metrics import ConsoleMonitor

from .scrape import Samples, delta, scrape

pytestmark = pytest.mark.slow

# 17 to 24 tokens: one full 16-token page to hit in the prefix cache, and a remainder that
# fits the smallest step bucket, so the workload compiles few shapes.
PROMPT = "The quick brown fox jumps over the lazy dog while the small cat watches it from a tree"
MAX_TOKENS = 5
PAGE_SIZE = 16


@dataclass
class Workload:
    prompt_len: int
    before: Samples
    after_length: Samples
    after_stop: Samples
    after_abort: Samples
    second_cached_tokens: int


@pytest.fixture(scope="module")
def engine():
    engine = eSurge(
        "smollm2-135m-instruct",
        max_model_len=256,
        max_num_seqs=8,
        page_size=PAGE_SIZE,
        kv_cache_memory=64 << 20,
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def monitoring(engine):
    monitoring = engine.start_monitoring(prometheus_port=0)
    yield monitoring
    engine.stop_monitoring()


def wait_idle(engine) -> None:
    deadline = time.monotonic() + 60
    while engine.has_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def workload(engine, monitoring) -> Workload:
    prompt_ids = engine.tokenizer.encode(PROMPT)
    assert PAGE_SIZE < len(prompt_ids) <= PAGE_SIZE + 8, len(prompt_ids)
    prompt = {"prompt_token_ids": prompt_ids}
    before = scrape(monitoring.url)
    first = engine.generate([prompt], SamplingParams(max_tokens=MAX_TOKENS, temperature=0))[0]
    after_length = scrape(monitoring.url)
    first_token = first.outputs[0].token_ids[0]
    stop_at_first = SamplingParams(
        max_tokens=MAX_TOKENS, temperature=0, stop_token_ids=[first_token]
    )
    second = engine.generate([prompt], stop_at_first)[0]
    assert second.outputs[0].finish_reason == "stop"
    after_stop = scrape(monitoring.url)
    stream = engine.stream(prompt, SamplingParams(max_tokens=200, temperature=0))
    next(stream)
    stream.close()  # aborts the request at the next step boundary
    wait_idle(engine)
    after_abort = scrape(monitoring.url)
    return Workload(
        len(prompt_ids), before, after_length, after_stop, after_abort, second.num_cached_tokens
    )


def test_generation_tokens_grow_by_the_tokens_generated(workload):
    grew = delta(workload.after_length, workload.before, "esurge:generation_tokens_total")
    assert grew == MAX_TOKENS
    grew = delta(workload.after_stop, workload.after_length, "esurge:generation_tokens_total")
    assert grew == 1


def test_prompt_tokens_grow_by_the_prompt_length_per_request(workload):
    grew = delta(workload.after_stop, workload.before, "esurge:prompt_tokens_total")
    assert grew == 2 * workload.prompt_len


def test_request_successes_are_counted_by_finish_reason(workload):
    def success(after, before, reason):
        return delta(after, before, "esurge:request_success_total", finished_reason=reason)

    assert success(workload.after_length, workload.before, "length") == 1
    assert success(workload.after_length, workload.before, "stop") == 0
    assert success(workload.after_stop, workload.after_length, "stop") == 1
    assert success(workload.after_abort, workload.after_stop, "abort") == 1


def test_a_repeated_prompt_hits_the_prefix_cache(workload):
    assert delta(workload.after_length, workload.before, "esurge:prefix_cache_hits_total") == 0
    hits = delta(workload.after_stop, workload.after_length, "esurge:prefix_cache_hits_total")
    assert hits == workload.second_cached_tokens >= PAGE_SIZE
    queries = delta(workload.after_stop, workload.after_length, "esurge:prefix_cache_queries_total")
    assert queries == workload.prompt_len


def test_latency_histograms_observe_once_per_request_and_per_token(workload):
    after, before = workload.after_length, workload.before
    for name in (
        "time_to_first_token_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
        "request_prefill_time_seconds",
        "request_decode_time_seconds",
    ):
        assert delta(after, before, f"esurge:{name}_count") == 1, name
    assert delta(after, before, "esurge:inter_token_latency_seconds_count") == MAX_TOKENS - 1
    assert delta(after, before, "esurge:request_generation_tokens_sum") == MAX_TOKENS
    assert delta(after, before, "esurge:request_prompt_tokens_sum") == workload.prompt_len


def test_iteration_tokens_sum_to_the_tokens_the_steps_computed(workload):
    after, before = workload.after_length, workload.before
    steps = delta(after, before, "esurge:iteration_tokens_total_count")
    assert steps == delta(after, before, "esurge:step_time_seconds_count") == MAX_TOKENS
    computed = delta(after, before, "esurge:iteration_tokens_total_sum")
    assert computed == workload.prompt_len + MAX_TOKENS - 1


def test_queues_are_empty_and_pages_free_once_idle(workload, engine):
    after = workload.after_abort
    assert after[("esurge:num_requests_running", ())] == 0
    assert after[("esurge:num_requests_waiting", ())] == 0
    assert after[("esurge:kv_cache_usage_perc", ())] == 0
    total = after[("esurge:kv_cache_total_pages", ())]
    assert after[("esurge:kv_cache_free_pages", ())] == total == engine.kv_cache.stats().num_pages
    assert after[("esurge:kv_cache_cached_pages", ())] >= 1


def test_compilations_match_the_runner(workload, engine):
    assert workload.after_abort[("esurge:num_compilations_total", ())] == (
        engine.runner.num_compilations
    )


def test_the_console_monitor_shows_the_engine_numbers(workload, engine):
    snapshot = engine.metrics.snapshot()
    text = ConsoleMonitor(engine.metrics).render_to_string(width=120)
    assert f"{snapshot.generation_tokens:,}" in text
    assert f"{snapshot.prompt_tokens:,}" in text
    assert f"{snapshot.prefix_cache_hit_rate:.1%}" in text
    assert "abort 1" in text and "length 1" in text and "stop 1" in text
    assert "ms" in text or " s" in text  # latency percentiles are filled in


def test_stop_monitoring_closes_the_exporter(engine, workload):
    monitoring = engine.start_monitoring(prometheus_port=0)
    url = monitoring.url
    assert ("esurge:num_requests_running", ()) in scrape(url)
    engine.stop_monitoring()
    assert engine.monitoring is None
    with pytest.raises(OSError):
        scrape(url)
