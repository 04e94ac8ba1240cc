"""Per-step host-side sampling arrays for a padded batch (built in numpy, one device copy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import jax
import numpy as np

from esurge_core.sampling.params import MAX_LOGPROBS, SamplingParams
from esurge_core.sampling.rng import seed_words

#: Buckets for the number of top log-probabilities returned per row (a static shape).
LOGPROB_BUCKETS = (0, 1, 2, 5, 10, MAX_LOGPROBS)
#: Smallest non-zero padded length of the penalty-token and logit-bias arrays.
MIN_PENALTY_TOKENS = 16
MIN_BIAS_ENTRIES = 4
# top_k values at or above the vocabulary size mean "off"; clip so int32 cannot overflow.
_TOP_K_LIMIT = 1 << 30
#: ``num_logprobs`` value meaning "no row of this batch asked for log-probabilities".
NO_LOGPROBS = -1


def _pow2_bucket(size: int, minimum: int) -> int:
    """0 for 0, otherwise the next power of two that is >= max(size, minimum)."""
    if size <= 0:
        return 0
    return max(minimum, 1 << (size - 1).bit_length())


def logprobs_bucket(requested: int) -> int:
    """Smallest bucket of :data:`LOGPROB_BUCKETS` holding ``requested`` (-1 stays -1)."""
    if requested < 0:
        return NO_LOGPROBS
    for bucket in LOGPROB_BUCKETS:
        if requested <= bucket:
            return bucket
    raise ValueError(f"logprobs={requested} exceeds the maximum {MAX_LOGPROBS}")


@dataclass(slots=True)
class SamplingRow:
    """What the batch builder needs from one running request.

    Attributes:
        params: the request's validated sampling parameters.
        seed: the request's effective seed (from :func:`esurge_core.sampling.request_seed`,
            drawn once at admission).
        prompt_token_ids: the prompt; read only when ``repetition_penalty != 1``.
        output_token_ids: tokens generated so far (their count is the RNG step, and they feed
            the penalties and the ``min_tokens`` rule). A numpy int array copies fastest.
    """

    params: SamplingParams
    seed: int
    prompt_token_ids: Sequence[int] | np.ndarray
    output_token_ids: Sequence[int] | np.ndarray


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True)
class SamplingBatch:
    """Per-row sampling inputs of a padded batch of ``B`` rows (a JAX pytree).

    Padding rows are greedy with no penalties; their outputs are meaningless. Arrays are
    numpy when built and become device arrays when passed through ``jax.jit``.

    Penalties use a padded token list rather than a dense ``[B, V]`` count array: row ``b``'s
    ``penalty_token_ids[b]`` holds its prompt ids (only if its repetition penalty is active)
    then its output ids, padded with -1; ``penalty_prompt_lens[b]`` says how many leading
    entries are prompt ids. The device scatter-adds them into counts each step, so the host
    ships ``O(B * L)`` ints (``L = 0`` when no row uses penalties) instead of ``O(B * V)``.

    Logit bias is sparse: ``bias_token_ids``/``bias_values`` ``[B, K]``, padded with id -1.
    Rows below ``min_tokens`` get a ``-inf`` bias on their stop tokens and EOS here.

    ``num_logprobs`` is static (part of the jit cache key): -1 when no row wants logprobs,
    otherwise the bucketed maximum requested in the batch.
    """

    temperature: np.ndarray  # float32[B]; 0 for greedy rows
    top_k: np.ndarray  # int32[B]; 0 = off
    top_p: np.ndarray  # float32[B]; 1 = off
    min_p: np.ndarray  # float32[B]; 0 = off
    repetition_penalty: np.ndarray  # float32[B]
    presence_penalty: np.ndarray  # float32[B]
    frequency_penalty: np.ndarray  # float32[B]
    seed_words: np.ndarray  # uint32[B, 2]
    steps: np.ndarray  # int32[B]; tokens generated so far
    penalty_token_ids: np.ndarray  # int32[B, L]
    penalty_prompt_lens: np.ndarray  # int32[B]
    bias_token_ids: np.ndarray  # int32[B, K]
    bias_values: np.ndarray  # float32[B, K]
    num_logprobs: int = field(default=NO_LOGPROBS, metadata={"static": True})

    @classmethod
    def from_requests(
        cls,
        rows: Sequence[SamplingRow],
        padded_size: int,
        *,
        eos_token_ids: Sequence[int] = (),
    ) -> SamplingBatch:
        """Build the arrays for ``rows`` padded to ``padded_size`` rows.

        Args:
            rows: the running requests, in batch order.
            padded_size: the batch bucket (>= ``len(rows)``).
            eos_token_ids: the model's EOS ids, blocked with the request's ``stop_token_ids``
                while a request has generated fewer than ``min_tokens`` (unless ``ignore_eos``).
        """
        num_rows = len(rows)
        if padded_size < num_rows:
            raise ValueError(f"padded_size {padded_size} is smaller than the {num_rows} rows")

        values = np.zeros((padded_size, 7), dtype=np.float32)
        values[:, 2] = 1.0  # top_p
        values[:, 4] = 1.0  # repetition_penalty
        steps = np.zeros(padded_size, dtype=np.int32)
        words = np.zeros((padded_size, 2), dtype=np.uint32)
        max_logprobs = NO_LOGPROBS
        penalty_rows: list[int] = []
        penalty_len = 0
        bias_rows: list[tuple[int, list[int], list[float]]] = []
        bias_len = 0
        eos = tuple(eos_token_ids)

        for index, row in enumerate(rows):
            params = row.params
            num_output = len(row.output_token_ids)
            steps[index] = num_output
            words[index] = seed_words(row.seed)
            values[index] = (
                0.0 if params.greedy else params.temperature,
                min(max(params.top_k, 0), _TOP_K_LIMIT),
                params.top_p,
                params.min_p,
                params.repetition_penalty,
                params.presence_penalty,
                params.frequency_penalty,
            )
            if params.logprobs is not None and params.logprobs > max_logprobs:
                max_logprobs = params.logprobs
            if params.uses_penalties:
                penalty_rows.append(index)
                length = num_output
                if params.repetition_penalty != 1.0:
                    length += len(row.prompt_token_ids)
                penalty_len = max(penalty_len, length)
            blocked: tuple[int, ...] = ()
            if num_output < params.min_tokens:
                blocked = (
                    params.stop_token_ids if params.ignore_eos else params.stop_token_ids + eos
                )
            if params.logit_bias or blocked:
                ids = list(params.logit_bias or ())
                biases = list((params.logit_bias or {}).values())
                ids.extend(blocked)
                biases.extend([-np.inf] * len(blocked))
                bias_rows.append((index, ids, biases))
                bias_len = max(bias_len, len(ids))

        penalty_token_ids = np.full(
            (padded_size, _pow2_bucket(penalty_len, MIN_PENALTY_TOKENS)), -1, dtype=np.int32
        )
        penalty_prompt_lens = np.zeros(padded_size, dtype=np.int32)
        for index in penalty_rows:
            row = rows[index]
            start = 0
            if row.params.repetition_penalty != 1.0:
                start = len(row.prompt_token_ids)
                penalty_token_ids[index, :start] = row.prompt_token_ids
                penalty_prompt_lens[index] = start
            penalty_token_ids[index, start : start + len(row.output_token_ids)] = (
                row.output_token_ids
            )

        width = _pow2_bucket(bias_len, MIN_BIAS_ENTRIES)
        bias_token_ids = np.full((padded_size, width), -1, dtype=np.int32)
        bias_values = np.zeros((padded_size, width), dtype=np.float32)
        for index, ids, biases in bias_rows:
            bias_token_ids[index, : len(ids)] = ids
            bias_values[index, : len(biases)] = biases

        return cls(
            temperature=values[:, 0].copy(),
            top_k=values[:, 1].astype(np.int32),
            top_p=values[:, 2].copy(),
            min_p=values[:, 3].copy(),
            repetition_penalty=values[:, 4].copy(),
            presence_penalty=values[:, 5].copy(),
            frequency_penalty=values[:, 6].copy(),
            seed_words=words,
            steps=steps,
            penalty_token_ids=penalty_token_ids,
            penalty_prompt_lens=penalty_prompt_lens,
            bias_token_ids=bias_token_ids,
            bias_values=bias_values,
            num_logprobs=logprobs_bucket(max_logprobs),
        )
