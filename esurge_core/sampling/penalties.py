"""Repetition, presence and frequency penalties and sparse logit bias, on device."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def apply_penalties(
    logits: jax.Array,
    token_ids: jax.Array,
    prompt_lens: jax.Array,
    repetition_penalty: jax.Array,
    presence_penalty: jax.Array,
    frequency_penalty: jax.Array,
) -> jax.Array:
    """Penalise tokens already seen, as vLLM does.

    Repetition applies to tokens seen in the prompt or the output: positive logits are
    divided by the penalty, negative ones multiplied. Frequency subtracts ``penalty * count``
    and presence subtracts ``penalty`` once, both over output tokens only.

    Args:
        logits: float32[B, V].
        token_ids: int32[B, L]; per row, ``prompt_lens[b]`` prompt ids then output ids, -1 pad.
        prompt_lens: int32[B].
        repetition_penalty, presence_penalty, frequency_penalty: float32[B].
    """
    batch, vocab = logits.shape
    if token_ids.shape[1] == 0:
        return logits
    valid = token_ids >= 0
    is_output = valid & (jnp.arange(token_ids.shape[1])[None, :] >= prompt_lens[:, None])
    # -1 padding becomes an out-of-range index that the scatter drops.
    ids = jnp.where(valid, token_ids, vocab)
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], ids.shape)
    zeros = jnp.zeros((batch, vocab), jnp.int32)
    output_counts = zeros.at[rows, ids].add(is_output.astype(jnp.int32), mode="drop")
    seen = zeros.at[rows, ids].add(valid.astype(jnp.int32), mode="drop") > 0

    penalty = repetition_penalty[:, None]
    repeated = jnp.where(logits > 0, logits / penalty, logits * penalty)
    logits = jnp.where(seen, repeated, logits)
    logits = logits - frequency_penalty[:, None] * output_counts.astype(logits.dtype)
    return logits - presence_penalty[:, None] * (output_counts > 0).astype(logits.dtype)


def apply_logit_bias(logits: jax.Array, token_ids: jax.Array, values: jax.Array) -> jax.Array:
    """Add sparse per-row biases: ``logits[b, token_ids[b, j]] += values[b, j]`` (-1 ids skipped)."""
    batch, vocab = logits.shape
    if token_ids.shape[1] == 0:
        return logits
    ids = jnp.where(token_ids >= 0, token_ids, vocab)
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], ids.shape)
    return logits.at[rows, ids].add(values, mode="drop")
