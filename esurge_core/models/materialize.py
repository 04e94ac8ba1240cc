"""Evaluate a value once per step on XLA:CPU, instead of inside every fused op that reads it.

XLA fuses a cheap-looking producer into each of its consumers and evaluates it again for every
element each consumer writes. For the RoPE angles that means a cosine and a sine per element of
each layer's q and k (a [T, heads, head_dim] tensor) instead of one per [T, head_dim / 2]
entry: 75 of 640 ms of a 2048-token SmolLM2 prefill step on this CPU (docs/PERFORMANCE.md,
step 14). XLA:CPU removes optimisation barriers before it fuses, but it never fuses across a
conditional, so on CPU :func:`materialize` evaluates ``fn`` as the taken branch of a
``lax.cond`` whose predicate (from a traced value XLA cannot fold) is always true; its outputs
are then plain buffers that the consumers read. On other platforms, where a conditional may cost
a device-to-host read of the predicate, ``fn`` is simply called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["materialize"]


def materialize(fn: Callable[..., Any], positions: jax.Array, *args: Any) -> Any:
    """``fn(*args)``, evaluated once into buffers on CPU (see the module docstring).

    Args:
        fn: a function of ``args`` returning arrays (or a pytree of arrays).
        positions: the step's token positions (int32, at least one entry, none negative):
            the traced value the always-true predicate is made of.
        args: the arguments of ``fn``.
    """
    if jax.default_backend() != "cpu":
        return fn(*args)

    def zeros(*operands):
        shapes = jax.eval_shape(fn, *operands)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    always = positions[0] > jnp.iinfo(jnp.int32).min
    return jax.lax.cond(always, fn, zeros, *args)
