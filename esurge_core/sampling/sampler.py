"""The on-device sampler: one jitted function for a whole padded batch with per-row params.

Per row: penalties, logit bias, then greedy rows take the argmax; sampled rows divide by
their temperature, apply min-p, top-k and top-p, and draw by inverse CDF with one uniform
number from their own key ``fold_in(key(seed), step)``. Greedy and sampled rows share one
batch; the whole sampled branch is skipped at run time (``lax.cond``) when every row is
greedy, and so are truncation steps no row uses. Compiles once per (batch size, penalty
width, bias width, ``num_logprobs`` bucket); the vocabulary size is fixed per model.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from esurge_core.sampling.batch import NO_LOGPROBS, SamplingBatch
from esurge_core.sampling.logprobs import gather_logprobs
from esurge_core.sampling.penalties import apply_logit_bias, apply_penalties
from esurge_core.sampling.rng import row_keys
from esurge_core.sampling.truncation import apply_min_p, apply_top_k_top_p

#: Block width of the two-level inverse-CDF draw (one cumsum over V/block, one over block).
_CDF_BLOCK = 256


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True)
class SamplerOutput:
    """What the sampler returns for a batch of ``B`` rows.

    Attributes:
        token_ids: int32[B], the chosen token per row.
        logprobs: float32[B], raw-model log-probability of the chosen token, or None when
            the batch's ``num_logprobs`` is -1 (no row asked).
        ranks: int32[B], 1-based rank of the chosen token under the raw model, or None.
        top_token_ids: int32[B, k] most likely raw-model tokens (k = the batch's bucket;
            slice each row to its request's ``logprobs``), or None.
        top_logprobs: float32[B, k], their log-probabilities, or None.
    """

    token_ids: jax.Array
    logprobs: jax.Array | None = None
    ranks: jax.Array | None = None
    top_token_ids: jax.Array | None = None
    top_logprobs: jax.Array | None = None


def process_logits(logits: jax.Array, batch: SamplingBatch) -> jax.Array:
    """Penalties then logit bias: the logits greedy rows take the argmax of."""
    logits = apply_penalties(
        logits,
        batch.penalty_token_ids,
        batch.penalty_prompt_lens,
        batch.repetition_penalty,
        batch.presence_penalty,
        batch.frequency_penalty,
    )
    return apply_logit_bias(logits, batch.bias_token_ids, batch.bias_values)


def truncate_logits(logits: jax.Array, batch: SamplingBatch) -> jax.Array:
    """Temperature, min-p, top-k, top-p for sampled rows (greedy rows pass temperature 1)."""
    temperature = jnp.where(batch.temperature > 0, batch.temperature, 1.0)
    logits = logits / temperature[:, None]
    logits = apply_min_p(logits, batch.min_p)
    vocab = logits.shape[-1]
    truncating = ((batch.top_k > 0) & (batch.top_k < vocab)) | (batch.top_p < 1.0)
    return jax.lax.cond(
        jnp.any(truncating),
        lambda x: apply_top_k_top_p(x, batch.top_k, batch.top_p),
        lambda x: x,
        logits,
    )


def inverse_cdf_sample(logits: jax.Array, uniforms: jax.Array) -> jax.Array:
    """Draw one token per row from ``softmax(logits)`` with one uniform in [0, 1) per row.

    Two levels (block sums, then within the chosen block) keep the scans short; a token of
    probability 0 (logit -inf) is never chosen.
    """
    batch, vocab = logits.shape
    num_blocks = -(-vocab // _CDF_BLOCK)
    weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    if num_blocks * _CDF_BLOCK != vocab:
        weights = jnp.pad(weights, ((0, 0), (0, num_blocks * _CDF_BLOCK - vocab)))
    blocks = weights.reshape(batch, num_blocks, _CDF_BLOCK)
    block_mass = jnp.sum(blocks, axis=-1)
    block_cdf = jnp.cumsum(block_mass, axis=-1)
    target = uniforms * block_cdf[:, -1]
    block = _first_above(block_cdf, target, block_mass > 0)
    below = jnp.take_along_axis(block_cdf - block_mass, block[:, None], 1)[:, 0]
    inner = jnp.take_along_axis(blocks, block[:, None, None], 1)[:, 0]
    offset = _first_above(jnp.cumsum(inner, axis=-1), target - below, inner > 0)
    return (block * _CDF_BLOCK + offset).astype(jnp.int32)


#: Logits per block of the two-stage argmax (a power of two; smaller when the vocabulary is
#: only divisible by a smaller one, down to ``_MIN_ARGMAX_BLOCK``, else the row is padded).
_ARGMAX_BLOCK = 512
_MIN_ARGMAX_BLOCK = 64


def first_argmax(logits: jax.Array) -> jax.Array:
    """Index of each row's largest value, the first on ties (as ``jnp.argmax``).

    Two stages: the maximum of each block of a few hundred logits, then the first block that
    holds the row's maximum, then the first index in that block. XLA:CPU runs the long row
    reductions of the direct forms slowly: at 64 x 49152, ``jnp.argmax`` (a variadic reduce)
    took 6.8 ms, max / compare / min-index 1.9 ms (8 ms inside a decode step), this 0.33 ms.
    A row whose maximum is NaN gives index 0.
    """
    rows, vocab = logits.shape
    block = _ARGMAX_BLOCK
    while vocab % block and block > _MIN_ARGMAX_BLOCK:
        block //= 2
    if vocab % block:
        padded = -(-vocab // block) * block
        logits = jnp.pad(logits, ((0, 0), (0, padded - vocab)), constant_values=-jnp.inf)
    blocks = logits.reshape(rows, -1, block)
    block_max = jnp.max(blocks, axis=-1)
    row_max = jnp.max(block_max, axis=-1, keepdims=True)
    first_block = jnp.argmax(block_max == row_max, axis=-1)
    inner = jnp.take_along_axis(blocks, first_block[:, None, None], axis=1)[:, 0]
    offset = jnp.argmax(inner == row_max, axis=-1)
    return (first_block * block + offset).astype(jnp.int32)


def _first_above(cdf: jax.Array, target: jax.Array, positive: jax.Array) -> jax.Array:
    """First index with ``cdf > target``, clipped to the last positive-mass index (rounding)."""
    index = jnp.sum(cdf <= target[:, None], axis=-1)
    width = cdf.shape[-1]
    last_positive = width - 1 - jnp.argmax(positive[:, ::-1], axis=-1)
    return jnp.minimum(index, last_positive)


def _sample(logits: jax.Array, batch: SamplingBatch) -> SamplerOutput:
    logits = logits.astype(jnp.float32)
    processed = process_logits(logits, batch)
    greedy_tokens = first_argmax(processed)
    is_greedy = batch.temperature <= 0

    def draw(processed: jax.Array) -> jax.Array:
        keys = row_keys(batch.seed_words, batch.steps)
        uniforms = jax.vmap(jax.random.uniform)(keys)
        sampled = inverse_cdf_sample(truncate_logits(processed, batch), uniforms)
        return jnp.where(is_greedy, greedy_tokens, sampled)

    tokens = jax.lax.cond(jnp.all(is_greedy), lambda _: greedy_tokens, draw, processed)
    if batch.num_logprobs == NO_LOGPROBS:
        return SamplerOutput(token_ids=tokens)
    sampled_lp, rank, top_ids, top_lp = gather_logprobs(logits, tokens, batch.num_logprobs)
    return SamplerOutput(tokens, sampled_lp, rank, top_ids, top_lp)


#: Sample a padded batch: ``sample(logits float32[B, V], batch) -> SamplerOutput``.
#: Call it inside the engine's own jitted step, or directly (it is jitted).
sample = jax.jit(_sample)
