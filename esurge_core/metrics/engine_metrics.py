"""``EngineMetrics``: one engine's Prometheus collectors and its once-per-step recorder.

Names follow vLLM (prefix ``esurge:``, label ``model_name``) so vLLM dashboards and alerts
carry over; docs/monitoring.md lists every metric and its vLLM counterpart. The engine calls
``record_step`` once for each step whose tokens it applies, and once at the end of each engine
step for the requests that ended. That call walks the step's scheduled chunks
(the engine walks them anyway), stamps the timing fields of each ``Request`` and feeds the
per-step counters and histograms; request-level histograms are observed once per finished
request. What the engine already counts (queues, KV-cache pages, prefix-cache lookups,
preemptions, compilations) is read at scrape time by ``EngineStateCollector``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from esurge_core.engine.request import FinishReason
from esurge_core.metrics.buckets import (
    ITL_BUCKETS,
    REQUEST_LATENCY_BUCKETS,
    STEP_TIME_BUCKETS,
    TTFT_BUCKETS,
    one_two_five_buckets,
    power_of_two_buckets,
)
from esurge_core.metrics.engine_state_collector import (
    EngineStateCollector,
    KVCacheState,
    RunnerState,
    SchedulerState,
)
from esurge_core.metrics.snapshot import MetricsSnapshot, percentile

if TYPE_CHECKING:
    from esurge_core.engine.request import Request
    from esurge_core.engine.request_tracker import RequestTracker
    from esurge_core.scheduling.scheduler import SchedulerOutput

PREFIX = "esurge:"

DEFAULT_WINDOW = 256


class EngineMetrics:
    """The Prometheus metrics of one engine, in a registry of its own.

    Args:
        model_name: value of the ``model_name`` label on every series.
        scheduler / kv_cache / runner: read at scrape time for gauges and cumulative counters.
        max_model_len: largest bucket of the per-request token histograms.
        max_num_batched_tokens: largest bucket of the tokens-per-step histogram.
        window: how many recent requests the console's latency percentiles cover.

    Attributes:
        registry: the ``CollectorRegistry`` holding every series of this engine.
    """

    def __init__(
        self,
        model_name: str,
        *,
        scheduler: SchedulerState,
        kv_cache: KVCacheState,
        runner: RunnerState,
        max_model_len: int,
        max_num_batched_tokens: int,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if window < 1:
            raise ValueError(f"the latency window must hold at least 1 request; got {window}")
        self.model_name = model_name
        self.registry = CollectorRegistry()
        self._state = EngineStateCollector(model_name, scheduler, kv_cache, runner)
        self.registry.register(self._state)
        labels = ["model_name"]
        registry = self.registry

        def counter(name: str, doc: str) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry).labels(model_name)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            metric = Histogram(PREFIX + name, doc, labels, registry=registry, buckets=buckets)
            return metric.labels(model_name)

        token_buckets = one_two_five_buckets(max_model_len)
        self._prompt_tokens = counter("prompt_tokens", "Prefill tokens processed.")
        self._generation_tokens = counter("generation_tokens", "Tokens generated.")
        self._draft_tokens = counter(
            "spec_decode_num_draft_tokens", "Speculative draft tokens verified."
        )
        self._accepted_tokens = counter(
            "spec_decode_num_accepted_tokens", "Speculative draft tokens accepted."
        )
        success = Counter(
            PREFIX + "request_success",
            "Requests finished, by finish reason.",
            ["model_name", "finished_reason"],
            registry=registry,
        )
        self._success = {
            reason: success.labels(model_name, reason.value) for reason in FinishReason
        }
        self._ttft = histogram(
            "time_to_first_token_seconds", "Arrival to first token, seconds.", TTFT_BUCKETS
        )
        self._itl = histogram(
            "inter_token_latency_seconds", "Time between two tokens of a request.", ITL_BUCKETS
        )
        self._e2e = histogram(
            "e2e_request_latency_seconds",
            "Arrival to finish, seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._queue = histogram(
            "request_queue_time_seconds",
            "Arrival to first scheduled, seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._prefill = histogram(
            "request_prefill_time_seconds",
            "First scheduled to first token, seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._decode = histogram(
            "request_decode_time_seconds",
            "First token to last token, seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._request_prompt = histogram(
            "request_prompt_tokens", "Prompt length of finished requests.", token_buckets
        )
        self._request_generation = histogram(
            "request_generation_tokens", "Tokens generated by finished requests.", token_buckets
        )
        self._iteration_tokens = histogram(
            "iteration_tokens_total",
            "Tokens scheduled in one engine step.",
            power_of_two_buckets(max_num_batched_tokens),
        )
        self._step_time = histogram(
            "step_time_seconds", "Duration of one engine step, seconds.", STEP_TIME_BUCKETS
        )
        self._window_lock = threading.Lock()
        self._recent_ttft: deque[float] = deque(maxlen=window)
        self._recent_e2e: deque[float] = deque(maxlen=window)

    # ------------------------------------------------------------------ recording (step thread)

    def record_step(
        self,
        plan: SchedulerOutput,
        touched: Iterable[RequestTracker],
        started: float,
        ended: float,
    ) -> None:
        """Record one engine step; called by the engine when a step's tokens are applied, and
        at the end of each engine step with an empty plan for the requests that ended.

        Stamps ``first_scheduled_time``, ``first_token_time``, ``last_token_time`` and
        ``finished_time`` on the requests involved.

        Args:
            plan: the step's scheduler output (its chunks ran this step).
            touched: trackers of the requests whose output changed this step (their finished
                requests are recorded once, the first step they are seen finished).
            started / ended: ``time.monotonic()`` at the start and end of the step.
        """
        if plan.chunks:
            self._step_time.observe(ended - started)
            self._iteration_tokens.observe(plan.num_scheduled_tokens)
            generated = 0
            prompt_tokens = 0
            for chunk in plan.chunks:
                request = chunk.request
                if request.first_scheduled_time is None:
                    request.first_scheduled_time = started
                if not chunk.samples:
                    continue
                generated += 1 + chunk.num_accepted_drafts
                if chunk.draft_token_ids:
                    self._draft_tokens.inc(len(chunk.draft_token_ids))
                    self._accepted_tokens.inc(chunk.num_accepted_drafts)
                if request.last_token_time is None:
                    request.first_token_time = ended
                    prompt_tokens += request.num_prompt_tokens
                    ttft = ended - request.arrival_time
                    self._ttft.observe(ttft)
                    with self._window_lock:
                        self._recent_ttft.append(ttft)
                else:
                    self._itl.observe(ended - request.last_token_time)
                request.last_token_time = ended
            if generated:
                self._generation_tokens.inc(generated)
            if prompt_tokens:
                self._prompt_tokens.inc(prompt_tokens)
        for tracker in touched:
            for choice in tracker.choices:
                request = choice.request
                if request.finish_reason is not None and request.finished_time is None:
                    self._record_finished(request, ended)

    def _record_finished(self, request: Request, now: float) -> None:
        request.finished_time = now
        assert request.finish_reason is not None
        self._success[request.finish_reason].inc()
        e2e = now - request.arrival_time
        self._e2e.observe(e2e)
        with self._window_lock:
            self._recent_e2e.append(e2e)
        self._request_prompt.observe(request.num_prompt_tokens)
        self._request_generation.observe(request.num_output_tokens)
        if request.first_scheduled_time is not None:
            self._queue.observe(request.first_scheduled_time - request.arrival_time)
        if request.first_token_time is not None:
            if request.first_scheduled_time is not None:
                self._prefill.observe(request.first_token_time - request.first_scheduled_time)
            if request.last_token_time is not None:
                self._decode.observe(request.last_token_time - request.first_token_time)

    # ------------------------------------------------------------------ reading (any thread)

    def render_prometheus(self) -> bytes:
        """This engine's series in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    def snapshot(self) -> MetricsSnapshot:
        """Current values of the main series plus latency percentiles of recent requests."""
        values: dict[str, float] = {}
        by_reason: dict[str, int] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.labels.get("model_name") != self.model_name:
                    continue
                if sample.name == PREFIX + "request_success_total":
                    by_reason[sample.labels["finished_reason"]] = int(sample.value)
                elif "le" not in sample.labels:
                    values[sample.name.removeprefix(PREFIX)] = sample.value
        with self._window_lock:
            ttft = sorted(self._recent_ttft)
            e2e = sorted(self._recent_e2e)
        return MetricsSnapshot(
            time=time.monotonic(),
            num_requests_running=int(values["num_requests_running"]),
            num_requests_waiting=int(values["num_requests_waiting"]),
            kv_cache_usage=values["kv_cache_usage_perc"],
            kv_cache_free_pages=int(values["kv_cache_free_pages"]),
            kv_cache_cached_pages=int(values["kv_cache_cached_pages"]),
            kv_cache_total_pages=int(values["kv_cache_total_pages"]),
            prompt_tokens=int(values["prompt_tokens_total"]),
            generation_tokens=int(values["generation_tokens_total"]),
            finished_requests=sum(by_reason.values()),
            requests_by_reason=by_reason,
            num_preemptions=int(values["num_preemptions_total"]),
            num_compilations=int(values["num_compilations_total"]),
            prefix_cache_queries=int(values["prefix_cache_queries_total"]),
            prefix_cache_hits=int(values["prefix_cache_hits_total"]),
            spec_decode_draft_tokens=int(values["spec_decode_num_draft_tokens_total"]),
            spec_decode_accepted_tokens=int(values["spec_decode_num_accepted_tokens_total"]),
            ttft_p50=percentile(ttft, 0.5),
            ttft_p99=percentile(ttft, 0.99),
            e2e_p50=percentile(e2e, 0.5),
            e2e_p99=percentile(e2e, 0.99),
        )
