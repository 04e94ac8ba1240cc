"""min-p, top-k and top-p truncation of a batch of logits with per-row parameters.

No full sort of the vocabulary: top-k reads thresholds off ``lax.top_k`` with a small static
cap, top-p reads them off the same sorted head when its mass reaches ``p``; rows the head
cannot answer (``k`` above the cap, a nucleus wider than the head) fall back to an exact
32-step bisection over the float bit patterns, run only when some row needs it
(``lax.cond``). Ties at a threshold are all kept. Masked entries become ``-inf``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Width of the sorted head read with ``lax.top_k`` (static).
TOP_K_FAST_CAP = 64

_INT_MIN = jnp.iinfo(jnp.int32).min
_INT_MAX = jnp.iinfo(jnp.int32).max
_BISECTION_STEPS = 32


def ordered_keys(values: jax.Array) -> jax.Array:
    """Map float32 to int32 so that integer order equals float order (-inf lowest)."""
    bits = jax.lax.bitcast_convert_type(values.astype(jnp.float32), jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _upper_mid(lo: jax.Array, hi: jax.Array) -> jax.Array:
    # ceil((lo + hi) / 2) without int32 overflow.
    return (lo >> 1) + (hi >> 1) + ((lo | hi) & 1)


def _lower_mid(lo: jax.Array, hi: jax.Array) -> jax.Array:
    # floor((lo + hi) / 2) without int32 overflow.
    return (lo >> 1) + (hi >> 1) + (lo & hi & 1)


def kth_largest_key(keys: jax.Array, k: jax.Array) -> jax.Array:
    """Exact key of each row's k-th largest entry (k >= 1), by bisection on the key space."""

    def step(_, bounds):
        lo, hi = bounds
        mid = _upper_mid(lo, hi)
        enough = jnp.sum(keys >= mid[:, None], axis=-1) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

    start = (jnp.full(k.shape, _INT_MIN, jnp.int32), jnp.full(k.shape, _INT_MAX, jnp.int32))
    return jax.lax.fori_loop(0, _BISECTION_STEPS, step, start)[0]


def nucleus_key(keys: jax.Array, probs: jax.Array, top_p: jax.Array) -> jax.Array:
    """Smallest key ``t`` per row with ``sum(probs[keys > t]) < top_p``; keep ``keys >= t``."""

    def step(_, bounds):
        lo, hi = bounds
        mid = _lower_mid(lo, hi)
        mass_above = jnp.sum(jnp.where(keys > mid[:, None], probs, 0.0), axis=-1)
        small = mass_above < top_p
        return jnp.where(small, lo, mid + 1), jnp.where(small, mid, hi)

    start = (
        jnp.full(top_p.shape, _INT_MIN, jnp.int32),
        jnp.full(top_p.shape, _INT_MAX, jnp.int32),
    )
    return jax.lax.fori_loop(0, _BISECTION_STEPS, step, start)[0]


def apply_min_p(logits: jax.Array, min_p: jax.Array) -> jax.Array:
    """Drop tokens whose probability is below ``min_p * max probability`` (0 = off)."""
    # p_i < min_p * p_max  <=>  logit_i < logit_max + log(min_p); log(0) = -inf masks nothing.
    threshold = jnp.max(logits, axis=-1) + jnp.log(min_p)
    return jnp.where(logits < threshold[:, None], -jnp.inf, logits)


def apply_top_k_top_p(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Keep each row's ``top_k`` largest logits (0 = off), then its ``top_p`` nucleus.

    The nucleus is taken on the distribution renormalised after top-k (as vLLM does): the
    smallest head of tokens, by descending probability, whose mass reaches ``top_p``.
    """
    vocab = logits.shape[-1]
    cap = min(TOP_K_FAST_CAP, vocab)
    k = jnp.where((top_k <= 0) | (top_k >= vocab), vocab, top_k)
    k_active = k < vocab
    p_active = top_p < 1.0

    head = jax.lax.top_k(logits, cap)[0]  # float32[B, cap], descending
    keys = ordered_keys(logits)
    head_keys = ordered_keys(head)

    # --- top-k -----------------------------------------------------------------------------
    from_head = jnp.take_along_axis(head_keys, jnp.clip(k - 1, 0, cap - 1)[:, None], 1)[:, 0]
    needs_bisection = k_active & (k > cap)
    k_key = jax.lax.cond(
        jnp.any(needs_bisection),
        lambda: jnp.where(needs_bisection, kth_largest_key(keys, k), from_head),
        lambda: from_head,
    )
    k_key = jnp.where(k_active, k_key, _INT_MIN)
    keep = keys >= k_key[:, None]
    logits = jnp.where(keep, logits, -jnp.inf)

    # --- top-p -----------------------------------------------------------------------------
    def nucleus(logits: jax.Array) -> jax.Array:
        log_total = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
        head_probs = jnp.where(head_keys >= k_key[:, None], jnp.exp(head - log_total), 0.0)
        inclusive = jnp.cumsum(head_probs, axis=-1)
        kept = jnp.sum((inclusive - head_probs) < top_p[:, None], axis=-1)  # >= 1
        head_key = jnp.take_along_axis(head_keys, (kept - 1)[:, None], 1)[:, 0]
        head_suffices = inclusive[:, -1] >= top_p
        wide = p_active & ~head_suffices
        probs = jnp.exp(logits - log_total)
        p_key = jax.lax.cond(
            jnp.any(wide),
            lambda: jnp.where(wide, nucleus_key(keys, probs, top_p), head_key),
            lambda: head_key,
        )
        p_key = jnp.where(p_active, p_key, _INT_MIN)
        return jnp.where(keys >= p_key[:, None], logits, -jnp.inf)

    return jax.lax.cond(jnp.any(p_active), nucleus, lambda x: x, logits)
