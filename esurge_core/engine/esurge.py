"""``eSurge``: the engine object a Python user creates.

It loads the model, selects the plugins named in the configuration, sizes the KV cache, and
owns one background thread that runs the step loop (it sleeps when there is nothing to do).
Callers submit requests from any thread and block only on their own request's queue:
``generate`` for whole batches, ``stream`` for deltas, ``chat`` for chat messages,
``async_stream``/``async_generate`` for asyncio servers, and ``add_request``/``step``/``abort``
for callers that drive the loop themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from esurge_core.capabilities import Requirements
from esurge_core.compilation_cache import use_compilation_cache
from esurge_core.components import ComponentKind
from esurge_core.config import EngineConfig
from esurge_core.engine.model_loading import load_model
from esurge_core.engine.outputs import RequestOutput
from esurge_core.engine.request import PENDING_TOKEN, FinishReason, Request
from esurge_core.engine.request_tracker import ChoiceTracker, RequestTracker
from esurge_core.errors import ESurgeError
from esurge_core.kv_cache.sizing import plan_kv_cache_for_device
from esurge_core.matmul.dispatch import packed_lm_head_bytes
from esurge_core.matmul.greedy_head import greedy_head_bytes
from esurge_core.metrics import EngineMetrics, Monitoring
from esurge_core.param_paths import node_at
from esurge_core.platform import current_platform
from esurge_core.plugin_manager import get_plugin_manager
from esurge_core.runner.model_runner import ModelRunner, PendingStep
from esurge_core.sampling.params import SamplingParams
from esurge_core.sampling.rng import request_seed
from esurge_core.scheduling.ngram_drafts import NgramDrafter, accepted_drafts
from esurge_core.scheduling.scheduler import ScheduledChunk, Scheduler, SchedulerOutput

logger = logging.getLogger(__name__)

Prompt = str | dict[str, Any]

DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048
#: On CPU, by default, the engine plans ahead only of steps of at most this many sequences.
#: There the "device" is the cores the host's work runs on: planning ahead hides the host's
#: work (about 1.5 ms a token: packing, the call, detokenising) behind a memory-bound small
#: step, but takes cores from a compute-bound large one. Measured on the 2-core Zen 4 kind
#: (docs/PERFORMANCE.md step 42), planning ahead against waiting, alternated in one process:
#: 1 / 2 / 4 / 8 / 16 sequences 1.06 / 1.04 / 1.03 / 1.00 / 1.04x the output tokens/s, 32
#: sequences 1.00x, 64 1.06x (faster in two pairs of four); but W1 / W3 / W4 (64, 32 and 64
#: sequences a step) 0.95x each in a side-by-side run of the peer benchmark.
CPU_PLAN_AHEAD_MAX_SEQS = 16


class EngineDeadError(ESurgeError, RuntimeError):
    """The engine loop has stopped (closed, or a fatal error); no request can be served."""


@dataclass(slots=True)
class _InFlightStep:
    """A queued step whose tokens have not been applied yet.

    ``slots[row]`` is where the token of sampling row ``row`` goes in its request's
    ``output_token_ids`` (a ``PENDING_TOKEN`` there, or the end of the list for a request that
    will certainly finish with it and so holds no pending token).
    """

    plan: SchedulerOutput
    pending: PendingStep
    slots: list[int]
    started: float


class _SyncSink:
    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[RequestOutput | BaseException] = queue.SimpleQueue()

    def put(self, item: RequestOutput | BaseException) -> None:
        self.queue.put(item)


class _AsyncSink:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()

    def put(self, item: RequestOutput | BaseException) -> None:
        # RuntimeError: the caller's event loop is closed (its server stopped); nobody is
        # listening any more, and the engine loop must not die for it.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class eSurge:
    """The eSurge inference engine.

    Args:
        model: packaged short name (``"smollm2-135m-instruct"``, ``"gemma3-270m"``), a Hugging
            Face folder, or a GGUF file.
        tokenizer: tokenizer folder or GGUF file; default: the model's own.
        **config: any field of ``EngineConfig`` by its flat name (``max_model_len``,
            ``max_num_seqs``, ``page_size``, ``dtype``, ``hbm_utilization``, ...; see
            docs/engine.md).

    Raises:
        ConfigError: an invalid configuration value.
        ComponentSelectionError: a named plugin is missing or unusable.
        WeightLoadError: the model cannot be loaded.
    """

    def __init__(
        self, model: str = "smollm2-135m-instruct", tokenizer: str | None = None, **config: Any
    ):
        self.config = EngineConfig.from_kwargs(model=model, tokenizer=tokenizer, **config)
        cfg = self.config
        registry = get_plugin_manager().registry
        loaded = load_model(
            cfg.model.model,
            cfg.model.tokenizer,
            cfg.model.dtype,
            param_dtype=cfg.model.param_dtype,
        )
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.model_name = cfg.runtime.esurge_name or cfg.model.model
        self.max_model_len = cfg.model.max_model_len or min(
            self.model.max_position_embeddings, 8192
        )
        self.parallel_plan = _parallel_plan(cfg, self.model)
        groups = self.model.kv_cache_groups()
        budget = cfg.scheduler.max_num_batched_tokens or (
            DEFAULT_MAX_NUM_BATCHED_TOKENS
            if cfg.scheduler.enable_chunked_prefill
            else self.max_model_len
        )
        self.max_num_batched_tokens = max(budget, cfg.scheduler.max_num_seqs)
        platform = current_platform()
        # Whether a step may be planned while the last one runs, and of steps of how many
        # sequences at most (None: any).
        self.async_scheduling = cfg.scheduler.async_scheduling is not False
        self.engine_thread_nice = cfg.scheduler.engine_thread_nice
        self.plan_ahead_max_seqs = (
            CPU_PLAN_AHEAD_MAX_SEQS
            if cfg.scheduler.async_scheduling is None and platform == "cpu"
            else None
        )
        requirements = Requirements(
            platform=platform,
            dtype=cfg.model.dtype,
            head_dim=self.model.head_dim,
            page_size=cfg.cache.page_size,
            patterns=frozenset(g.pattern for g in groups),
            soft_cap=getattr(self.model, "attn_logit_softcap", None) is not None,
        )
        attention_spec = registry.select(
            ComponentKind.ATTENTION_BACKEND, cfg.runtime.attention, requirements
        )
        self.attention_backend_name = attention_spec.name
        attention = attention_spec.load()()
        matmul_spec = registry.select(
            ComponentKind.MATMUL_BACKEND,
            _matmul_choice(cfg.runtime.matmul, self.parallel_plan),
            requirements,
        )
        self.matmul_backend_name = matmul_spec.name
        matmul_backend = matmul_spec.load()()
        kv_cache_dtype = cfg.cache.kv_cache_dtype or cfg.model.dtype
        head_copy_bytes = (  # the runner packs weights only without tensor parallelism
            packed_lm_head_bytes(loaded.params, self.model.tied_lm_head_paths(), matmul_backend)
            + greedy_head_bytes(_head_shape(self.model, loaded.params), matmul_backend)
            if self.parallel_plan is None
            else 0
        )
        dtype_bytes = 2 if kv_cache_dtype == "bfloat16" else 4
        self.kv_plan = plan_kv_cache_for_device(
            groups=groups,
            page_size=cfg.cache.page_size,
            num_kv_heads=self.model.num_kv_heads,
            head_dim=self.model.head_dim,
            dtype_bytes=dtype_bytes,
            max_model_len=self.max_model_len,
            weight_bytes=_tree_bytes(loaded.params) + head_copy_bytes,
            hbm_utilization=cfg.cache.hbm_utilization,
            kv_cache_memory=cfg.cache.kv_cache_memory,
            max_step_tokens=self.max_num_batched_tokens,
        )
        allocator = registry.get(ComponentKind.KV_CACHE_ALLOCATOR, cfg.cache.kv_cache_allocator)
        self.kv_cache = allocator.load()(
            groups,
            self.kv_plan.num_pages,
            cfg.cache.page_size,
            enable_prefix_caching=cfg.cache.enable_prefix_caching,
            prefix_cache_capacity=cfg.cache.prefix_cache_capacity,
        )
        policy = registry.get(ComponentKind.SCHEDULER, cfg.scheduler.scheduler).load()()
        self.drafter = (
            NgramDrafter(
                cfg.scheduler.num_speculative_tokens,
                cfg.scheduler.prompt_lookup_min,
                cfg.scheduler.prompt_lookup_max,
                cfg.scheduler.speculative_max_seqs,
            )
            if cfg.scheduler.num_speculative_tokens
            else None
        )
        self.scheduler = Scheduler(
            policy,
            self.kv_cache,
            max_num_seqs=cfg.scheduler.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            enable_chunked_prefill=cfg.scheduler.enable_chunked_prefill,
            enable_preemption=cfg.scheduler.enable_preemption,
            drafter=self.drafter,
        )
        sample = registry.get(ComponentKind.SAMPLER, cfg.runtime.sampler).load()
        self.eos_token_ids = _eos_ids(loaded.hf_config, self.tokenizer)
        if cfg.runtime.compilation_cache:
            use_compilation_cache()
        self.runner = ModelRunner(
            self.model,
            loaded.params,
            attention,
            sample,
            self.kv_cache,
            num_pages=self.kv_plan.num_pages,
            max_num_seqs=cfg.scheduler.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            min_input_pad=cfg.runtime.min_input_pad,
            eos_token_ids=sorted(self.eos_token_ids),
            verbose=cfg.runtime.runner_verbose,
            parallel_plan=self.parallel_plan,
            kv_cache_dtype=kv_cache_dtype,
            matmul_backend=matmul_backend,
            huge_page_weights=cfg.runtime.huge_page_weights,
        )
        if self.runner.huge_page_bytes:
            logger.info("%.0f MB of weights in huge pages", self.runner.huge_page_bytes / 1e6)
        if cfg.runtime.use_aot_forward:
            compiled = self.runner.precompile(progress=True)
            logger.info("compiled %d step buckets ahead of time", compiled)
        self._trackers: dict[str, RequestTracker] = {}
        self._in_flight: _InFlightStep | None = None
        self._inbox: deque[tuple[str, Any]] = deque()
        self._ids = itertools.count()
        self._step_lock = threading.Lock()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._fatal: BaseException | None = None
        self.num_steps = 0  # compiled steps queued (one per non-empty plan)
        self.last_step_time = time.monotonic()
        # Monitoring (docs/monitoring.md): record_step calls per step, scrapes read state.
        self.metrics = EngineMetrics(
            self.model_name,
            scheduler=self.scheduler,
            kv_cache=self.kv_cache,
            runner=self.runner,
            max_model_len=self.max_model_len,
            max_num_batched_tokens=self.max_num_batched_tokens,
        )
        self.monitoring: Monitoring | None = None

    # ------------------------------------------------------------------ submission

    def add_request(
        self,
        prompt: Prompt,
        sampling_params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        priority: int = 0,
        cache_salt: str | None = None,
        _sink: Any = None,
        _wake_loop: bool = True,
    ) -> str:
        """Queue a request; it runs at the next step. Returns its id.

        ``prompt`` is a string or ``{"prompt_token_ids": [...]}``.

        Raises:
            ValueError: empty prompt, token ids outside the vocabulary, or a prompt that
                leaves no room to generate within ``max_model_len``.
        """
        self._check_alive()
        params = sampling_params or SamplingParams()
        params.validate_for_vocab(self.model.vocab_size)
        text, token_ids = self._tokenize(prompt)
        if len(token_ids) >= self.max_model_len:
            raise ValueError(
                f"the prompt has {len(token_ids)} tokens but max_model_len is "
                f"{self.max_model_len}; at most {self.max_model_len - 1} prompt tokens leave "
                "room for one generated token"
            )
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self._trackers:
            raise ValueError(f"request id {request_id!r} is already in use")
        room = self.max_model_len - len(token_ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        now = time.monotonic()
        base_seed = request_seed(params)
        choices = []
        for index in range(params.n):
            request = Request(
                request_id=request_id if params.n == 1 else f"{request_id}-{index}",
                prompt_token_ids=list(token_ids),
                sampling_params=params,
                arrival_time=now,
                seed=base_seed + index,
                max_tokens=max_tokens,
                eos_token_ids=self.eos_token_ids,
                priority=priority,
                cache_salt=cache_salt,
                parent_id=request_id,
                choice_index=index,
            )
            choices.append(ChoiceTracker.create(request, self.tokenizer, self.max_model_len))
        tracker = RequestTracker(request_id, text, list(token_ids), choices, sink=_sink)
        self._trackers[request_id] = tracker
        self._inbox.append(("add", tracker))
        if _wake_loop:
            self._notify()
        return request_id

    def abort(self, request_id: str) -> None:
        """Stop a request wherever it is and free its pages (at the next step boundary)."""
        self._inbox.append(("abort", request_id))
        self._notify()

    # ------------------------------------------------------------------ the step

    def tracked_request_ids(self) -> list[str]:
        """Ids of the requests the engine still holds (queued, running, or whose final
        output is not delivered yet)."""
        return list(self._trackers)

    def has_unfinished_requests(self) -> bool:
        """Whether any request is queued or running, or a step's tokens are still due."""
        return bool(self._inbox) or self.scheduler.num_unfinished > 0 or self._in_flight is not None

    def step(self) -> list[RequestOutput]:
        """Run one engine step; return the outputs of every request that changed.

        With ``async_scheduling`` (the default) a step plans and queues the next compiled
        step before it waits for the previous one's tokens, so the host's work (planning,
        packing, detokenising, emitting) overlaps the compiled step; the tokens a call
        returns are those of the step queued by the call before. Without it, and for a step
        it may not plan ahead of (see ``_may_plan_ahead_of``), a call waits for its own.
        """
        with self._step_lock:
            started = time.monotonic()
            touched: dict[str, RequestTracker] = {}
            self._drain_inbox(touched)
            # The step in flight stays in self._in_flight until its tokens are applied and
            # recorded, so has_unfinished_requests() holds while it is being applied. Only a
            # step the engine may plan ahead of is left in flight (below), so the next step
            # is planned before its tokens are back.
            previous = self._in_flight
            plan = self.scheduler.schedule()
            for request in plan.preempted:
                if request.is_finished:  # preemption disabled: failed instead
                    tracker = self._trackers[request.parent_id]
                    tracker.choices[request.choice_index].on_finished_elsewhere()
                    touched[tracker.request_id] = tracker
            queued = self._dispatch(plan, previous, started) if plan.chunks else None
            if previous is not None:
                self._apply(previous, touched)
            if queued is not None and not self._may_plan_ahead_of(queued):
                self._apply(queued, touched)
                queued = None
            self.last_step_time = time.monotonic()
            # The requests that ended (their stamps are set by the steps applied above).
            self.metrics.record_step(
                SchedulerOutput(), touched.values(), started, self.last_step_time
            )
            self._in_flight = queued
            return self._emit(touched)

    def _may_plan_ahead_of(self, step: _InFlightStep) -> bool:
        """Whether the next step can be planned before ``step``'s tokens are back: not when
        asynchronous scheduling is off, nor when ``step`` has more sequences than
        ``plan_ahead_max_seqs``, nor when a request of ``step`` samples with penalties (its
        next sampling reads every token it generated), nor when ``step`` verifies drafts (how
        many it accepts decides where the next tokens go)."""
        limit = self.plan_ahead_max_seqs
        return (
            self.async_scheduling
            and (limit is None or len(step.plan.chunks) <= limit)
            and not any(
                chunk.request.sampling_params.uses_penalties for chunk in step.pending.sampled
            )
            and not any(chunk.draft_token_ids for chunk in step.pending.sampled)
        )

    def _dispatch(
        self, plan: SchedulerOutput, previous: _InFlightStep | None, started: float
    ) -> _InFlightStep:
        """Queue ``plan``'s step and hold a pending token for each request that samples,
        unless that token certainly ends the request (``max_tokens`` or ``max_model_len``
        reached): such a request is not planned again before its token is back."""
        pending = self.runner.dispatch(plan.chunks, None if previous is None else previous.pending)
        self.num_steps += 1
        slots = []
        for chunk in pending.sampled:
            request = chunk.request
            slot = request.num_output_tokens
            slots.append(slot)
            # A step with drafts is applied before the next is planned (_may_plan_ahead_of).
            if not chunk.draft_token_ids and not request.ends_by_length(
                slot + 1, self.max_model_len
            ):
                request.output_token_ids.append(PENDING_TOKEN)
        return _InFlightStep(plan, pending, slots, started)

    def _apply(self, step: _InFlightStep, touched: dict[str, RequestTracker]) -> None:
        """Wait for ``step``'s tokens and give them to their requests (stop checks, text)."""
        result = self.runner.collect(step.pending)
        dropped: set[str] = set()
        for index, (chunk, row) in enumerate(zip(result.sampled, result.first_rows)):
            request = chunk.request
            if request.is_finished:  # ended while the step ran (abort, or by its last token)
                dropped.add(request.request_id)
                continue
            if chunk.draft_token_ids:
                width = 1 + len(chunk.draft_token_ids)
                self._apply_drafts(chunk, result.token_ids[row : row + width])
                tracker = self._trackers[request.parent_id]
                touched[tracker.request_id] = tracker
                continue
            slot = step.slots[index]
            token_id = int(result.token_ids[row])
            outputs = request.output_token_ids
            if slot < len(outputs):
                outputs[slot] = token_id
            else:
                outputs.append(token_id)
            tracker = self._trackers[request.parent_id]
            logprob, top = _row_logprobs(result, row, request.sampling_params.logprobs)
            choice = tracker.choices[request.choice_index]
            reason = choice.on_token(token_id, logprob, top, num_output=slot + 1)
            if reason is not None:
                self.scheduler.finish_requests([request], reason)
            touched[tracker.request_id] = tracker
        plan = step.plan
        if dropped:  # their tokens were never generated, as far as the metrics go
            plan = SchedulerOutput(
                [c for c in plan.chunks if c.request.request_id not in dropped],
                plan.preempted,
                plan.num_scheduled_tokens,
            )
        self.metrics.record_step(plan, (), step.started, time.monotonic())

    def _apply_drafts(self, chunk: ScheduledChunk, sampled: np.ndarray) -> None:
        """Give ``chunk``'s request the tokens its drafts earned: the model's token after its
        last known token, and one more for each leading draft the step's tokens confirm (none
        when the drafts assumed another value for a token that was pending when they were
        planned); the K/V of the drafts after the first wrong one are left to be overwritten."""
        request = chunk.request
        assumed = chunk.assumed_token
        if assumed is None or request.token_ids_view[chunk.start] == assumed:
            accepted = accepted_drafts(chunk.draft_token_ids, sampled.tolist())
        else:
            accepted = 0
        request.num_computed_tokens = chunk.start + 1 + accepted
        choice = self._trackers[request.parent_id].choices[request.choice_index]
        for given, token_id in enumerate(sampled[: accepted + 1].tolist()):
            request.output_token_ids.append(token_id)
            reason = choice.on_token(token_id, num_output=request.num_output_tokens)
            if reason is not None:  # the tokens after the one that ends it are not output
                self.scheduler.finish_requests([request], reason)
                accepted = given
                break
        chunk.num_accepted_drafts = accepted

    def _drain_inbox(self, touched: dict[str, RequestTracker]) -> None:
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "add":
                for choice in item.choices:
                    self.scheduler.add_request(choice.request)
            else:
                tracker = self._trackers.get(item)
                if tracker is None:
                    continue
                requests = [c.request for c in tracker.choices]
                self.scheduler.finish_requests(requests, FinishReason.ABORT)
                for choice in tracker.choices:
                    choice.on_finished_elsewhere()
                touched[tracker.request_id] = tracker

    def _emit(self, touched: dict[str, RequestTracker]) -> list[RequestOutput]:
        outputs = []
        for tracker in touched.values():
            output = tracker.snapshot()
            outputs.append(output)
            if output.finished:
                del self._trackers[tracker.request_id]
            if tracker.sink is not None:
                tracker.sink.put(output)
        return outputs

    # ------------------------------------------------------------------ background loop

    def start(self) -> None:
        """Start the background step loop (done automatically by the blocking APIs)."""
        if self._thread is None or not self._thread.is_alive():
            self._check_alive()
            self._thread = threading.Thread(target=self._loop, name="esurge-loop", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        if self.engine_thread_nice is not None:
            _set_thread_nice(self.engine_thread_nice)
        try:
            while not self._closed:
                with self._wakeup:
                    idle = False
                    while not self._closed and not self.has_unfinished_requests():
                        idle = True
                        self._wakeup.wait()
                if self._closed:
                    break
                if idle:  # waking up is progress: watchdogs measure from here, not from idle
                    self.last_step_time = time.monotonic()
                self.step()
        except BaseException as exc:  # the loop must never die silently
            logger.exception("eSurge engine loop failed")
            self._fatal = exc
            for tracker in list(self._trackers.values()):
                if tracker.sink is not None:
                    tracker.sink.put(EngineDeadError(f"the engine loop failed: {exc!r}"))

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    @property
    def is_alive(self) -> bool:
        """False after ``close()`` or a fatal error of the loop."""
        return not self._closed and self._fatal is None

    def _check_alive(self) -> None:
        if self._closed:
            raise EngineDeadError("the engine is closed")
        if self._fatal is not None:
            raise EngineDeadError(f"the engine loop failed: {self._fatal!r}")

    def close(self) -> None:
        """Stop the loop and any monitoring; unfinished requests are aborted."""
        self.stop_monitoring()
        self._closed = True
        self._notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for tracker in list(self._trackers.values()):
            if tracker.sink is not None:
                tracker.sink.put(EngineDeadError("the engine was closed"))

    # ------------------------------------------------------------------ monitoring

    def start_monitoring(
        self,
        prometheus_port: int | None = None,
        enable_console: bool = False,
        host: str = "127.0.0.1",
    ) -> Monitoring:
        """Serve ``self.metrics`` over HTTP on ``prometheus_port`` (0: a free port, read back
        from the returned ``Monitoring.port``) and/or show a live console view; replaces any
        monitoring already running. See docs/monitoring.md.

        Raises:
            ValueError: neither a port nor the console was asked for.
            MetricsExporterError: the port cannot be bound.
        """
        self.stop_monitoring()
        self.monitoring = Monitoring.start(
            self.metrics, prometheus_port=prometheus_port, enable_console=enable_console, host=host
        )
        return self.monitoring

    def stop_monitoring(self) -> None:
        """Stop the exporter and console view started by ``start_monitoring`` (idempotent)."""
        if self.monitoring is not None:
            self.monitoring.stop()
            self.monitoring = None

    def __enter__(self) -> eSurge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ blocking APIs

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = False,
        priority: int = 0,
    ) -> list[RequestOutput]:
        """Generate for one or many prompts; outputs come back in prompt order."""
        prompt_list = [prompts] if isinstance(prompts, str | dict) else list(prompts)
        if isinstance(sampling_params, Sequence):
            if len(sampling_params) != len(prompt_list):
                raise ValueError(
                    f"got {len(sampling_params)} sampling params for {len(prompt_list)} prompts"
                )
            params_list = list(sampling_params)
        else:
            params_list = [sampling_params] * len(prompt_list)
        sinks = []
        ids = []
        # Queue every prompt before the loop can look, so an idle engine schedules them
        # together (woken by the first, it would step on it alone while the rest arrive, and
        # the step shapes would depend on that timing). The loop checks for work holding
        # ``_wakeup`` (reentrant), so it sees all of them or none. A prompt that fails
        # validation cancels the call.
        with self._wakeup:
            try:
                for prompt, params in zip(prompt_list, params_list):
                    sink = _SyncSink()
                    ids.append(
                        self.add_request(
                            prompt, params, priority=priority, _sink=sink, _wake_loop=False
                        )
                    )
                    sinks.append(sink)
            except BaseException:
                for request_id in ids:
                    self.abort(request_id)
                raise
            finally:
                self._wakeup.notify_all()
        self.start()
        results: list[RequestOutput] = []
        progress = None
        if use_tqdm:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(sinks), desc="generate", unit="req")
        try:
            for sink in sinks:
                results.append(self._wait_final(sink))
                if progress is not None:
                    progress.update(1)
        except BaseException:
            for request_id in ids:
                self.abort(request_id)
            raise
        finally:
            if progress is not None:
                progress.close()
        return results

    def _wait_final(self, sink: _SyncSink) -> RequestOutput:
        for output in self._iterate(sink):
            if output.finished:
                return output
        raise EngineDeadError("the request ended without a final output")

    def _iterate(self, sink: _SyncSink) -> Iterator[RequestOutput]:
        while True:
            item = sink.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finished:
                return

    def stream(
        self,
        prompt: Prompt,
        sampling_params: SamplingParams | None = None,
        *,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> Iterator[RequestOutput]:
        """Yield a ``RequestOutput`` per step that changed the request; ``delta_text`` holds
        the new text. Closing the iterator early aborts the request."""
        sink = _SyncSink()
        request_id = self.add_request(
            prompt, sampling_params, priority=priority, cache_salt=cache_salt, _sink=sink
        )
        self.start()
        finished = False
        try:
            for output in self._iterate(sink):
                finished = output.finished
                yield output
        finally:
            if not finished:
                self.abort(request_id)

    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict] | None = None, **kwargs: Any
    ) -> list[int]:
        """Render ``messages`` with the model's chat template and tokenise them."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"model {self.model_name!r} has no chat template (a base model); use generate()"
            )
        text = self.tokenizer.apply_chat_template(
            list(messages), tools=tools, add_generation_prompt=True, tokenize=False, **kwargs
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        sampling_params: SamplingParams | None = None,
        *,
        stream: bool = False,
        tools: Sequence[dict] | None = None,
    ) -> RequestOutput | Iterator[RequestOutput]:
        """Answer chat ``messages`` (OpenAI shape) using the model's chat template."""
        prompt = {"prompt_token_ids": self.apply_chat_template(messages, tools=tools)}
        if stream:
            return self.stream(prompt, sampling_params)
        return self.generate([prompt], sampling_params)[0]

    # ------------------------------------------------------------------ asyncio APIs

    async def async_stream(
        self,
        prompt: Prompt,
        sampling_params: SamplingParams | None = None,
        *,
        priority: int = 0,
        cache_salt: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """``async for`` over a request's outputs; cancelling the consumer aborts it."""
        sink = _AsyncSink()
        request_id = self.add_request(
            prompt,
            sampling_params,
            request_id=request_id,
            priority=priority,
            cache_salt=cache_salt,
            _sink=sink,
        )
        self.start()
        finished = False
        try:
            while not finished:
                item = await sink.queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:
                self.abort(request_id)

    async def async_generate(
        self, prompt: Prompt, sampling_params: SamplingParams | None = None, **kwargs: Any
    ) -> RequestOutput:
        """The final output of one request, awaited."""
        final = None
        async for output in self.async_stream(prompt, sampling_params, **kwargs):
            final = output
        assert final is not None
        return final

    # ------------------------------------------------------------------ helpers

    def _tokenize(self, prompt: Prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("the prompt is empty")
            return prompt, list(self.tokenizer.encode(prompt))
        if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            ids = [int(t) for t in prompt["prompt_token_ids"]]
            if not ids:
                raise ValueError("prompt_token_ids is empty")
            bad = [t for t in ids if not 0 <= t < self.model.vocab_size]
            if bad:
                raise ValueError(
                    f"prompt_token_ids contains {bad[:5]} outside the vocabulary "
                    f"[0, {self.model.vocab_size})"
                )
            return prompt.get("prompt"), ids
        raise TypeError(
            f"a prompt is a string or {{'prompt_token_ids': [...]}}; got {type(prompt).__name__}"
        )


def _set_thread_nice(value: int) -> None:
    """Give the calling thread nice ``value`` (Linux: a thread's own scheduling priority).

    On a CPU the step loop's host work (planning, packing, the jitted call, applying tokens)
    runs beside the kernels' threads on the same cores; a value below theirs lets it preempt
    them when it wakes and hand the next step over sooner (docs/PERFORMANCE.md step 46).
    Lowering a thread's nice value needs CAP_SYS_NICE or RLIMIT_NICE; without them the thread
    keeps the process's value and a warning says so."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)
    except (OSError, AttributeError) as exc:  # no permission, or not Linux
        logger.warning(
            "engine_thread_nice=%d could not be set (%s); the engine thread keeps the "
            "process's nice value %d",
            value,
            exc,
            os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0,
        )


def _matmul_choice(name: str, parallel_plan: Any) -> str:
    """``auto`` means ``xla`` under tensor parallelism: XLA partitions its dot over the mesh,
    while a custom kernel has no partitioning rule and would run on gathered weights."""
    return "xla" if name == "auto" and parallel_plan is not None else name


def _parallel_plan(cfg: EngineConfig, model: Any) -> Any:
    """The tensor-parallel plan over this engine's replica of the mesh, or None on one device."""
    sizes = cfg.parallel
    if sizes.tensor_parallel_size == 1 and sizes.data_parallel_size == 1:
        return None
    from esurge_core.parallel import (
        ParallelConfig,
        build_mesh,
        plan_tensor_parallel,
        replica_meshes,
    )

    parallel = ParallelConfig(
        tensor_parallel_size=sizes.tensor_parallel_size,
        data_parallel_size=sizes.data_parallel_size,
    )
    mesh = replica_meshes(build_mesh(parallel))[0]
    return plan_tensor_parallel(model, mesh)


def _row_logprobs(result, row: int, requested: int | None):
    if requested is None or result.logprobs is None:
        return None, None
    top = [
        (int(t), float(lp))
        for t, lp in zip(
            result.top_token_ids[row][:requested], result.top_logprobs[row][:requested]
        )
    ]
    return float(result.logprobs[row]), top


def _eos_ids(hf_config: dict, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = hf_config.get("eos_token_id")
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list):
        ids.update(int(i) for i in configured)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _head_shape(model, params: dict):
    """The ``[hidden, vocab]`` shape and dtype of the head ``CausalLM.plain_lm_head`` will
    name once the weights are packed (a tied embedding's transposed copy), or ``None``."""
    import jax

    if model.final_logit_softcap is not None:
        return None
    if "lm_head" in params:
        head = params["lm_head"]
        return jax.ShapeDtypeStruct(tuple(head.shape), head.dtype)
    tied = model.tied_lm_head_paths()
    if tied is None:
        return None
    embedding = node_at(params, tied[0])
    return jax.ShapeDtypeStruct(tuple(embedding.shape[::-1]), embedding.dtype)


def _tree_bytes(tree: Any) -> int:
    import jax

    return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(tree))
