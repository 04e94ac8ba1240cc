"""Runs one scheduled step: host packing, one compiled forward + sampling, tokens back.

Per step the runner

1. packs the scheduled chunks into numpy arrays (token ids, positions, ``cu_q_lens``,
   ``kv_lens``, one page table and slot mapping per KV-cache group, logits indices), padded to
   the step's buckets (see ``buckets``);
2. builds the sampling batch of the rows that sample (those whose chunk reaches the end of
   what the request knows);
3. calls one jitted function, forward + logits of the sampling rows + sampler, with the KV
   caches donated, so the cache is updated in place, and the step's inputs sent as one
   buffer per dtype (``host_inputs``); where the matmul backend offers it and every row is
   greedy, the tokens come from the backend's argmax of the LM head instead of the logits
   (``esurge_core.matmul.greedy_head``);
4. copies back only the sampled token ids (and log-probabilities when a row asked for them).

Sampling rows come first in ``logits_indices``, so the sampler's batch rows line up with them.
A chunk that verifies speculative drafts samples one row per token it feeds (its last known
token, then each draft), in order.

``dispatch`` and ``collect`` split a step for asynchronous scheduling: ``dispatch`` returns as
soon as the step is queued (JAX runs it in the background), so the engine can plan and queue
the next one before this one's tokens are back. A token the next step feeds in that is still
being sampled (``PENDING_TOKEN``) is read on the device from the previous step's output:
``token_source`` names its row there, and the step always returns its sampled ids padded to
the largest sequence bucket, so that input has one shape whatever the previous step's bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from esurge_core.attention.metadata import AttentionMetadata
from esurge_core.engine.request import PENDING_TOKEN
from esurge_core.host_huge_pages import back_with_huge_pages
from esurge_core.kv_cache.manager import KVCacheManager
from esurge_core.matmul.backend import MatmulBackend
from esurge_core.matmul.dispatch import pack_matmul_weights, use_matmul_backend
from esurge_core.matmul.greedy_head import add_greedy_head, greedy_head_fn
from esurge_core.models.causal_lm import CausalLM
from esurge_core.models.fused_projections import held_weight_paths
from esurge_core.parallel.tensor_parallel import TensorParallelPlan
from esurge_core.runner.buckets import bucket_for, power_of_two_buckets
from esurge_core.runner.host_inputs import HostLayout, pack_host_arrays, unpack_host_arrays
from esurge_core.sampling.batch import SamplingBatch, SamplingRow
from esurge_core.sampling.sampler import SamplerOutput
from esurge_core.sampling.sampler import sample as builtin_sample
from esurge_core.scheduling.scheduler import ScheduledChunk

logger = logging.getLogger(__name__)


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True)
class StepInputs:
    """Device inputs of one step (a pytree; every shape fixed by the buckets)."""

    input_ids: jax.Array  # int32[T]
    positions: jax.Array  # int32[T]
    metadata: AttentionMetadata
    logits_indices: jax.Array  # int32[S]
    # int32[T]: -1, or the row of the previous step's sampled ids that is this token's id
    token_source: jax.Array
    num_sampled: jax.Array  # int32[1]: the real rows of logits_indices


@dataclass(slots=True)
class StepResult:
    """Host copies of what one step produced, for the rows that sampled (chunk order).

    ``first_rows[i]`` is the row of ``sampled[i]``'s first token (a chunk with drafts has one
    row per draft after it). ``logprobs``/``top_token_ids``/``top_logprobs`` are ``None``
    unless a row asked.
    """

    sampled: list[ScheduledChunk]
    first_rows: list[int]
    token_ids: np.ndarray
    logprobs: np.ndarray | None = None
    top_token_ids: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None


@dataclass(slots=True)
class PendingStep:
    """A dispatched step whose outputs may still be computing.

    Attributes:
        sampled: the chunks that sample, in the order of the sampler's rows.
        first_rows: the sampler's row of each sampled chunk's first token.
        output: the sampler's outputs (device arrays).
        token_ids: the sampled ids padded to the largest sequence bucket (device), which the
            next step reads its pending tokens from.
        rows: request id -> its row of the sampler's outputs.
    """

    sampled: list[ScheduledChunk]
    first_rows: list[int]
    output: SamplerOutput
    token_ids: jax.Array
    rows: dict[str, int]


class ModelRunner:
    """Owns the params, the KV caches and the compiled step of one model.

    Args:
        model: the model (pure forward / compute_logits).
        params: its parameters, q/k/v and gate/up fused or not (``fuse_projections``);
            under tensor parallelism they are sharded apart (``shard_params``).
        attention: the selected attention backend object.
        sample: the sampler, ``sample(logits, SamplingBatch) -> SamplerOutput`` (traceable).
        kv_cache: the page allocator (read for page tables).
        num_pages: pages in each layer's cache.
        max_num_seqs / max_num_batched_tokens / max_model_len / min_input_pad: bucket limits.
        eos_token_ids: blocked while a request is below ``min_tokens``.
        parallel_plan: shard weights and KV cache over a device mesh (tensor parallelism).
        kv_cache_dtype: dtype of the KV cache (default: the model's activation dtype).
        matmul_backend: computes the weight products it handles, told how many rows of the
            padded step are real (``None``: XLA computes every product).
        huge_page_weights: move the params held in host memory into transparent huge pages
            (``esurge_core.host_huge_pages``; on CPU under Linux, elsewhere nothing).
    """

    def __init__(
        self,
        model: CausalLM,
        params: dict,
        attention: object,
        sample: Callable[[jax.Array, SamplingBatch], SamplerOutput],
        kv_cache: KVCacheManager,
        *,
        num_pages: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        min_input_pad: int,
        eos_token_ids: Sequence[int] = (),
        verbose: bool = False,
        parallel_plan: TensorParallelPlan | None = None,
        kv_cache_dtype: str | None = None,
        matmul_backend: MatmulBackend | None = None,
        huge_page_weights: bool = False,
    ) -> None:
        self.model = model
        # A backend whose work follows each sequence's kv_len, whatever the page table's width,
        # gets one table width (the longest context's) instead of one compiled step per width
        # bucket: fewer shapes to compile, so fewer compilations in the middle of traffic.
        one_table_width = bool(getattr(attention, "cost_follows_kv_lens", False))
        if parallel_plan is not None:
            params = parallel_plan.shard_params(params)
            attention = parallel_plan.wrap_attention(attention)
        else:  # a backend may keep weights in its kernels' layout (sharding needs arrays)
            params = pack_matmul_weights(
                params,
                held_weight_paths(params, model.matmul_weight_paths()),
                matmul_backend,
                tied_lm_head=model.tied_lm_head_paths(),
            )
            params = add_greedy_head(params, model.plain_lm_head(params), matmul_backend)
        # The step takes the params as a flat tuple of their arrays: flattening the nested
        # dicts (and the packed weights' dataclass nodes) on every call cost about 0.1 ms of
        # the host's time per step (docs/PERFORMANCE.md step 40).
        leaves, param_treedef = jax.tree.flatten(params)
        self._param_leaves = tuple(leaves)
        self._param_treedef = param_treedef
        #: Bytes of the params moved into transparent huge pages (0: none).
        self.huge_page_bytes = back_with_huge_pages(leaves) if huge_page_weights else 0
        self.kv_cache = kv_cache
        self.page_size = kv_cache.page_size
        self.num_groups = len(kv_cache.groups)
        self.eos_token_ids = tuple(eos_token_ids)
        self.verbose = verbose
        self.token_buckets = power_of_two_buckets(min_input_pad, max_num_batched_tokens)
        self.seq_buckets = power_of_two_buckets(min_input_pad, max_num_seqs)
        max_pages = -(-max_model_len // self.page_size)
        self.page_buckets = (
            (max_pages,)
            if one_table_width
            else power_of_two_buckets(min(min_input_pad, max_pages), max_pages)
        )
        self.kv_caches = (
            model.init_kv_caches(num_pages, self.page_size, kv_cache_dtype)
            if parallel_plan is None
            else parallel_plan.init_kv_caches(num_pages, self.page_size, kv_cache_dtype)
        )
        self.num_compilations = 0
        max_seqs = self.seq_buckets[-1]
        # What a step with no previous one reads its pending tokens from (it has none).
        self._no_previous_tokens = jnp.zeros(max_seqs, jnp.int32)

        def step(param_leaves, kv_caches, previous_tokens, host_buffers, host_layout: HostLayout):
            params = jax.tree.unflatten(param_treedef, param_leaves)
            inputs, batch = unpack_host_arrays(host_layout, host_buffers)
            self.num_compilations += 1  # runs once per trace, i.e. per compiled shape
            if self.verbose:
                logger.info(
                    "compiling step T=%d S=%d P=%d",
                    inputs.input_ids.shape[0],
                    inputs.logits_indices.shape[0],
                    inputs.metadata.page_indices[0].shape[1],
                )
            # Real tokens lead the padded batch (cu_q_lens[-1] of them); the rows whose logits
            # are taken are at most one per real sequence.
            source = inputs.token_source
            input_ids = jnp.where(
                source >= 0, previous_tokens[jnp.maximum(source, 0)], inputs.input_ids
            )
            with use_matmul_backend(matmul_backend, inputs.metadata.cu_q_lens[-1]):
                hidden, kv_caches = model.forward(
                    params,
                    kv_caches,
                    input_ids,
                    inputs.positions,
                    inputs.metadata,
                    attention,
                )
            rows = jnp.take(hidden, inputs.logits_indices, axis=0)
            num_rows = inputs.num_sampled[0]

            def logits_then_sample(rows: jax.Array) -> SamplerOutput:
                with use_matmul_backend(matmul_backend, num_rows):
                    logits = model.compute_logits(params, rows)
                return sample(logits, batch)

            greedy = (
                greedy_head_fn(params, model.plain_lm_head(params), matmul_backend, batch)
                if sample is builtin_sample
                else None
            )
            if greedy is None:
                out = logits_then_sample(rows)
            else:  # every row greedy: the backend's argmax of the head, logits never formed
                out = jax.lax.cond(
                    jnp.all(batch.temperature <= 0),
                    lambda rows: SamplerOutput(token_ids=greedy(rows, num_rows)),
                    logits_then_sample,
                    rows,
                )
            padded = jnp.zeros(max_seqs, jnp.int32).at[: out.token_ids.shape[0]].set(out.token_ids)
            return kv_caches, out, padded

        if parallel_plan is None:
            self._step = jax.jit(step, static_argnums=(4,), donate_argnums=(1,))
        else:  # explicit shardings: weights and KV heads split, step inputs replicated
            plan = parallel_plan
            self._step = jax.jit(
                step,
                in_shardings=(
                    tuple(jax.tree.leaves(plan.param_shardings)),
                    plan.kv_cache_shardings,
                    plan.replicated,
                    plan.replicated,
                ),
                out_shardings=(plan.kv_cache_shardings, plan.replicated, plan.replicated),
                static_argnums=(4,),
                donate_argnums=(1,),
            )

    @property
    def params(self) -> Any:
        """The params the step runs with (packed where the matmul backend packs them)."""
        return jax.tree.unflatten(self._param_treedef, self._param_leaves)

    # ------------------------------------------------------------------ packing

    def prepare(
        self, chunks: Sequence[ScheduledChunk], previous: PendingStep | None = None
    ) -> tuple[StepInputs, SamplingBatch, list[ScheduledChunk], list[int]]:
        """Pack ``chunks`` into padded host arrays (no device work); also return the chunks
        that sample and the sampler's row of each one's first token.

        A chunk may end with its request's pending token; ``previous`` is the step sampling it.

        Raises:
            RuntimeError: a pending token without the step that samples it.
        """
        page_size = self.page_size
        num_tokens = sum(c.num_new_tokens for c in chunks)
        num_seqs = len(chunks)
        sampled = [c for c in chunks if c.samples]
        num_rows = len(sampled) + sum(len(c.draft_token_ids) for c in sampled)
        t_pad = bucket_for(num_tokens, self.token_buckets)
        s_pad = bucket_for(max(num_seqs, num_rows), self.seq_buckets)
        max_pages = max(-(-(c.start + c.num_new_tokens) // page_size) for c in chunks)
        p_pad = bucket_for(max_pages, self.page_buckets)

        input_ids = np.zeros(t_pad, np.int32)
        token_source = np.full(t_pad, -1, np.int32)
        positions = np.zeros(t_pad, np.int32)
        seq_of_token = np.zeros(t_pad, np.int32)
        cu_q_lens = np.zeros(s_pad + 1, np.int32)
        kv_lens = np.zeros(s_pad, np.int32)
        tables = [np.zeros((s_pad, p_pad), np.int32) for _ in range(self.num_groups)]
        offset = 0
        for row, chunk in enumerate(chunks):
            n = chunk.num_new_tokens
            end = chunk.start + n
            drafts = chunk.draft_token_ids
            ids = chunk.request.tokens_between(chunk.start, end - len(drafts))
            input_ids[offset : offset + n - len(drafts)] = ids
            if drafts:
                input_ids[offset + n - len(drafts) : offset + n] = drafts
            if ids[-1] == PENDING_TOKEN:  # only a request's last known token can be pending
                request_id = chunk.request.request_id
                if previous is None or request_id not in previous.rows:
                    raise RuntimeError(
                        f"request {request_id!r} feeds a pending token that no running step samples"
                    )
                token_source[offset + len(ids) - 1] = previous.rows[request_id]
            positions[offset : offset + n] = np.arange(chunk.start, end, dtype=np.int32)
            seq_of_token[offset : offset + n] = row
            offset += n
            cu_q_lens[row + 1] = offset
            kv_lens[row] = end
            self.kv_cache.fill_page_table(chunk.request.request_id, tables, row)
        cu_q_lens[num_seqs + 1 :] = offset

        real = slice(0, num_tokens)
        page_of_token = positions[real] // page_size
        in_page = positions[real] % page_size
        slot_mappings = []
        for table in tables:
            slots = np.zeros(t_pad, np.int32)
            slots[real] = table[seq_of_token[real], page_of_token] * page_size + in_page
            slot_mappings.append(slots)

        logits_indices = np.zeros(s_pad, np.int32)
        sampled_rows = [row for row, c in enumerate(chunks) if c.samples]
        last_tokens = cu_q_lens[np.asarray(sampled_rows, np.int32) + 1] - 1
        # A chunk with drafts samples after each of its last 1 + len(drafts) tokens.
        sampling_rows: list[SamplingRow] = []
        first_rows: list[int] = []
        for chunk in sampled:
            first_rows.append(len(sampling_rows))
            request = chunk.request
            row = SamplingRow(
                request.sampling_params,
                request.seed,
                request.prompt_token_ids,
                request.output_token_ids,
            )
            sampling_rows += [row] * (1 + len(chunk.draft_token_ids))
        if num_rows == len(sampled):
            logits_indices[:num_rows] = last_tokens
        else:
            for chunk, first, last in zip(sampled, first_rows, last_tokens, strict=True):
                width = 1 + len(chunk.draft_token_ids)
                logits_indices[first : first + width] = np.arange(last - width + 1, last + 1)
        batch = SamplingBatch.from_requests(sampling_rows, s_pad, eos_token_ids=self.eos_token_ids)
        metadata = AttentionMetadata(
            kv_lens=kv_lens,
            cu_q_lens=cu_q_lens,
            num_seqs=np.asarray([num_seqs], np.int32),
            page_indices=tuple(tables),
            slot_mapping=tuple(slot_mappings),
        )
        inputs = StepInputs(
            input_ids,
            positions,
            metadata,
            logits_indices,
            token_source,
            np.asarray([num_rows], np.int32),
        )
        return inputs, batch, sampled, first_rows

    # ------------------------------------------------------------------ ahead of time

    def bucket_shapes(self) -> list[tuple[int, int, int]]:
        """Every (tokens, sequences, pages per sequence) bucket a step can fall into."""
        return [
            (t, s, p)
            for t in self.token_buckets
            for s in self.seq_buckets
            if s <= t
            for p in self.page_buckets
        ]

    def precompile(self, progress: bool = True) -> int:
        """Compile the step for every bucket now (``use_aot_forward``); returns how many.

        Each bucket runs once on an all-padding batch (every token writes into the null
        page, which is never read unmasked), with the sampling variant of plain requests
        (no penalties, no logit bias, no log-probs); requests that use those compile their
        variant on first use.
        """
        from tqdm.auto import tqdm

        shapes = self.bucket_shapes()
        before = self.num_compilations
        for t_pad, s_pad, p_pad in tqdm(shapes, desc="compiling buckets", disable=not progress):
            inputs = StepInputs(
                input_ids=np.zeros(t_pad, np.int32),
                positions=np.zeros(t_pad, np.int32),
                metadata=AttentionMetadata(
                    kv_lens=np.zeros(s_pad, np.int32),
                    cu_q_lens=np.zeros(s_pad + 1, np.int32),
                    num_seqs=np.zeros(1, np.int32),
                    page_indices=tuple(
                        np.zeros((s_pad, p_pad), np.int32) for _ in range(self.num_groups)
                    ),
                    slot_mapping=tuple(np.zeros(t_pad, np.int32) for _ in range(self.num_groups)),
                ),
                logits_indices=np.zeros(s_pad, np.int32),
                token_source=np.full(t_pad, -1, np.int32),
                num_sampled=np.zeros(1, np.int32),
            )
            batch = SamplingBatch.from_requests([], s_pad, eos_token_ids=self.eos_token_ids)
            out, _ = self._run(inputs, batch)
            out.token_ids.block_until_ready()
        return self.num_compilations - before

    # ------------------------------------------------------------------ execution

    def _run(
        self,
        inputs: StepInputs,
        batch: SamplingBatch,
        previous_tokens: jax.Array | None = None,
    ) -> tuple[SamplerOutput, jax.Array]:
        """Queue the compiled step (inputs in one transfer per dtype); keeps the new caches.

        Returns the sampler's outputs and the sampled ids padded to the largest sequence
        bucket, both still computing."""
        layout, buffers = pack_host_arrays((inputs, batch))
        if previous_tokens is None:
            previous_tokens = self._no_previous_tokens
        self.kv_caches, out, padded = self._step(
            self._param_leaves, self.kv_caches, previous_tokens, buffers, layout
        )
        return out, padded

    def dispatch(
        self, chunks: Sequence[ScheduledChunk], previous: PendingStep | None = None
    ) -> PendingStep:
        """Queue one step without waiting for it; ``previous`` is the step still running whose
        sampled tokens this one feeds in (the chunks' pending tokens)."""
        inputs, batch, sampled, first_rows = self.prepare(chunks, previous)
        out, padded = self._run(inputs, batch, None if previous is None else previous.token_ids)
        # Ask for the host copies now: JAX's CPU client runs a copy requested later after the
        # steps queued before it, so the tokens of this step would wait for the next one.
        for array in (out.token_ids, out.logprobs, out.top_token_ids, out.top_logprobs):
            if array is not None:
                array.copy_to_host_async()
        rows = {chunk.request.request_id: row for chunk, row in zip(sampled, first_rows)}
        return PendingStep(sampled, first_rows, out, padded, rows)

    def collect(self, pending: PendingStep) -> StepResult:
        """Wait for a dispatched step; the sampled tokens of the rows that sample."""
        sampled, out = pending.sampled, pending.output
        n = len(sampled) + sum(len(c.draft_token_ids) for c in sampled)
        token_ids = np.asarray(out.token_ids)[:n]
        result = StepResult(sampled, pending.first_rows, token_ids)
        if out.logprobs is not None:
            result.logprobs = np.asarray(out.logprobs)[:n]
            result.top_token_ids = np.asarray(out.top_token_ids)[:n]
            result.top_logprobs = np.asarray(out.top_logprobs)[:n]
        return result

    def execute(self, chunks: Sequence[ScheduledChunk]) -> StepResult:
        """Run one step and return the sampled tokens of the rows that sample."""
        return self.collect(self.dispatch(chunks))
