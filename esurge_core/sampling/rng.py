"""Per-request random streams: a request's draws depend only on its seed and its step.

Row ``b`` of a batch samples with ``fold_in(key(seed_b), step_b)`` where ``step_b`` is the
number of tokens the request has generated so far. Nothing about the batch (size, position,
neighbours) enters the key, so a seeded request draws the same numbers alone or in any batch,
and a preempted request that is recomputed draws the same numbers again (its tokens also
depend on its logits, equal to the last bit only between steps of the same padded shape).
"""

from __future__ import annotations

import secrets

import jax
import jax.numpy as jnp
import numpy as np

from esurge_core.sampling.params import SamplingParams

_U64 = 1 << 64


def request_seed(params: SamplingParams) -> int:
    """The seed a request samples with: its own, or a random 64-bit one drawn now.

    Call once at admission and keep the result with the request state, so an unseeded
    request keeps one stream for its whole life (including after preemption).
    """
    if params.seed is not None:
        return params.seed
    return secrets.randbits(64)


def seed_words(seed: int) -> tuple[int, int]:
    """Split any Python int seed into the two uint32 words of a threefry key (mod 2**64)."""
    value = seed % _U64
    return value >> 32, value & 0xFFFFFFFF


def row_keys(seed_words_array: jax.Array, steps: jax.Array) -> jax.Array:
    """Typed PRNG keys for a batch: ``fold_in(key(seed), step)`` per row.

    Args:
        seed_words_array: uint32[B, 2], the words from :func:`seed_words` per row.
        steps: int32[B], tokens generated so far per row.
    """
    base = jax.random.wrap_key_data(seed_words_array.astype(jnp.uint32), impl="threefry2x32")
    return jax.vmap(jax.random.fold_in)(base, steps.astype(jnp.uint32))


def seed_words_array(seeds: list[int]) -> np.ndarray:
    """uint32[len(seeds), 2] key words for a list of Python int seeds."""
    out = np.empty((len(seeds), 2), dtype=np.uint32)
    for index, seed in enumerate(seeds):
        out[index] = seed_words(seed)
    return out
