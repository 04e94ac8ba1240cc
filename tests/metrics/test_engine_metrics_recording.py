"""``EngineMetrics.record_step`` over hand-built steps (no model): what each series counts."""

from __future__ import annotations

from esurge_core.engine.request import FinishReason, Request
from esurge_core.sampling.params import SamplingParams
from esurge_core.scheduling.scheduler import ScheduledChunk, SchedulerOutput

from .fakes import FakeChoice, FakeTracker, fake_engine
from .scrape import parse


def make_request(prompt_len: int = 10, arrival: float = 100.0) -> Request:
    return Request(
        request_id="r",
        prompt_token_ids=list(range(prompt_len)),
        sampling_params=SamplingParams(max_tokens=4),
        arrival_time=arrival,
        seed=0,
        max_tokens=4,
    )


def prefill(request: Request) -> SchedulerOutput:
    chunk = ScheduledChunk(request, 0, request.num_prompt_tokens, samples=True)
    return SchedulerOutput([chunk], num_scheduled_tokens=request.num_prompt_tokens)


def decode(request: Request) -> SchedulerOutput:
    chunk = ScheduledChunk(request, request.num_tokens - 1, 1, samples=True)
    return SchedulerOutput([chunk], num_scheduled_tokens=1)


def run_request(engine, request: Request, tokens: int, reason: FinishReason) -> None:
    """Prefill at t=101..102, then one decode per second; finish with ``reason``."""
    tracker = FakeTracker([FakeChoice(request)])
    engine.metrics.record_step(prefill(request), [tracker], 101.0, 102.0)
    request.output_token_ids.append(1)
    for index in range(1, tokens):
        request.output_token_ids.append(1)
        if index == tokens - 1:
            request.finish(reason)
        engine.metrics.record_step(decode(request), [tracker], 102.0 + index - 1, 102.0 + index)


def samples(engine):
    return parse(engine.metrics.render_prometheus().decode())


def test_a_request_stamps_scheduled_first_token_last_token_and_finished_times():
    engine = fake_engine()
    request = make_request()
    run_request(engine, request, tokens=3, reason=FinishReason.LENGTH)
    assert request.first_scheduled_time == 101.0
    assert request.first_token_time == 102.0
    assert request.last_token_time == 104.0
    assert request.finished_time == 104.0


def test_token_counters_count_prompt_once_and_every_generated_token():
    engine = fake_engine()
    run_request(engine, make_request(prompt_len=10), tokens=3, reason=FinishReason.LENGTH)
    values = samples(engine)
    assert values[("esurge:prompt_tokens_total", ())] == 10
    assert values[("esurge:generation_tokens_total", ())] == 3


def test_latency_histograms_observe_each_phase_of_a_finished_request():
    engine = fake_engine()
    run_request(engine, make_request(arrival=100.0), tokens=3, reason=FinishReason.STOP)
    values = samples(engine)
    assert values[("esurge:time_to_first_token_seconds_sum", ())] == 2.0
    assert values[("esurge:request_queue_time_seconds_sum", ())] == 1.0
    assert values[("esurge:request_prefill_time_seconds_sum", ())] == 1.0
    assert values[("esurge:request_decode_time_seconds_sum", ())] == 2.0
    assert values[("esurge:e2e_request_latency_seconds_sum", ())] == 4.0
    assert values[("esurge:inter_token_latency_seconds_count", ())] == 2
    assert values[("esurge:inter_token_latency_seconds_sum", ())] == 2.0


def test_a_finished_request_is_counted_once_under_its_reason():
    engine = fake_engine()
    request = make_request()
    run_request(engine, request, tokens=2, reason=FinishReason.STOP)
    tracker = FakeTracker([FakeChoice(request)])
    engine.metrics.record_step(SchedulerOutput(), [tracker], 110.0, 110.5)  # seen again
    values = samples(engine)
    assert values[("esurge:request_success_total", (("finished_reason", "stop"),))] == 1
    assert values[("esurge:request_success_total", (("finished_reason", "length"),))] == 0
    assert values[("esurge:e2e_request_latency_seconds_count", ())] == 1


def test_a_request_aborted_before_running_counts_as_abort_without_queue_time():
    engine = fake_engine()
    request = make_request()
    request.finish(FinishReason.ABORT)
    engine.metrics.record_step(SchedulerOutput(), [FakeTracker([FakeChoice(request)])], 1.0, 2.0)
    values = samples(engine)
    assert values[("esurge:request_success_total", (("finished_reason", "abort"),))] == 1
    assert values[("esurge:request_queue_time_seconds_count", ())] == 0


def test_step_histograms_observe_only_steps_that_ran_tokens():
    engine = fake_engine()
    engine.metrics.record_step(SchedulerOutput(), [], 1.0, 1.5)
    request = make_request(prompt_len=12)
    engine.metrics.record_step(prefill(request), [], 2.0, 2.25)
    values = samples(engine)
    assert values[("esurge:step_time_seconds_count", ())] == 1
    assert values[("esurge:step_time_seconds_sum", ())] == 0.25
    assert values[("esurge:iteration_tokens_total_sum", ())] == 12


def test_gauges_and_engine_counters_read_the_engine_state_at_scrape_time():
    engine = fake_engine()
    engine.scheduler.running = [object(), object()]
    engine.scheduler.num_waiting = 3
    engine.scheduler.num_preemptions = 4
    engine.kv_cache.used, engine.kv_cache.queries, engine.kv_cache.hits = 25, 40, 16
    engine.runner.num_compilations = 5
    values = samples(engine)
    assert values[("esurge:num_requests_running", ())] == 2
    assert values[("esurge:num_requests_waiting", ())] == 3
    assert values[("esurge:kv_cache_usage_perc", ())] == 0.25
    assert values[("esurge:kv_cache_free_pages", ())] == 75
    assert values[("esurge:num_preemptions_total", ())] == 4
    assert values[("esurge:prefix_cache_queries_total", ())] == 40
    assert values[("esurge:prefix_cache_hits_total", ())] == 16
    assert values[("esurge:num_compilations_total", ())] == 5


def test_every_series_carries_the_model_name_label():
    engine = fake_engine("my-model")
    for family in engine.metrics.registry.collect():
        for sample in family.samples:
            assert sample.labels["model_name"] == "my-model", sample.name


def test_two_engines_keep_separate_registries():
    first, second = fake_engine(), fake_engine()
    run_request(first, make_request(prompt_len=7), tokens=2, reason=FinishReason.LENGTH)
    assert samples(first)[("esurge:prompt_tokens_total", ())] == 7
    assert samples(second)[("esurge:prompt_tokens_total", ())] == 0


def test_snapshot_gives_counts_and_latency_percentiles_of_recent_requests():
    engine = fake_engine()
    for arrival in (100.0, 99.0, 98.0):  # e2e 4, 5, 6 s
        run_request(engine, make_request(arrival=arrival), tokens=3, reason=FinishReason.LENGTH)
    snapshot = engine.metrics.snapshot()
    assert snapshot.finished_requests == 3
    assert snapshot.requests_by_reason["length"] == 3
    assert snapshot.generation_tokens == 9
    assert snapshot.e2e_p50 == 5.0
    assert snapshot.e2e_p99 == 6.0
    assert snapshot.ttft_p50 == 3.0
