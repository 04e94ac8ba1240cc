"""Log-probabilities returned with sampled tokens, from the raw model distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gather_logprobs(
    logits: jax.Array, token_ids: jax.Array, num_logprobs: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Log-probabilities of ``log_softmax(logits)`` (before penalties and temperature).

    This is vLLM's default ``raw_logprobs`` mode: what the model itself assigned.

    Args:
        logits: float32[B, V], the model's logits.
        token_ids: int32[B], the sampled tokens.
        num_logprobs: static number of top entries per row (>= 0).

    Returns:
        ``(sampled_logprob f32[B], sampled_rank i32[B], top_ids i32[B, k], top_logprobs
        f32[B, k])``; the rank is 1 + the number of tokens strictly more likely.
    """
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    sampled = jnp.take_along_axis(logprobs, token_ids[:, None], axis=1)[:, 0]
    rank = jnp.sum(logprobs > sampled[:, None], axis=-1).astype(jnp.int32) + 1
    if num_logprobs > 0:
        top_logprobs, top_ids = jax.lax.top_k(logprobs, num_logprobs)
    else:
        batch = logits.shape[0]
        top_logprobs = jnp.zeros((batch, 0), jnp.float32)
        top_ids = jnp.zeros((batch, 0), jnp.int32)
    return sampled, rank, top_ids.astype(jnp.int32), top_logprobs
