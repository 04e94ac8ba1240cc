"""``materialize``: a value evaluated once per step, not inside every op that reads it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esurge_core.models.materialize import materialize
from esurge_core.models.rope import apply_rope, rope_angles

INV_FREQ = (1.0 / 10000 ** (np.arange(0, 64, 2) / 64)).astype(np.float32)


def _rotate_two(positions, q, k, *, once: bool):
    if once:
        cos, sin = rope_angles(positions, INV_FREQ)
    else:
        angles = positions.astype(jnp.float32)[:, None] * jnp.asarray(INV_FREQ)[None, :]
        cos, sin = jnp.cos(angles), jnp.sin(angles)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


def _optimized_hlo(once: bool) -> str:
    args = (
        jax.ShapeDtypeStruct((256,), jnp.int32),
        jax.ShapeDtypeStruct((256, 9, 64), jnp.float32),
        jax.ShapeDtypeStruct((256, 3, 64), jnp.float32),
    )
    fn = jax.jit(lambda p, q, k: _rotate_two(p, q, k, once=once))
    return fn.lower(*args).compile().as_text()


def test_values_are_those_of_the_function():
    positions = jnp.asarray([0, 5, 17, 1023, 4095], jnp.int32)
    q = jax.random.normal(jax.random.PRNGKey(0), (5, 9, 64))
    k = jax.random.normal(jax.random.PRNGKey(1), (5, 3, 64))
    got = jax.jit(lambda p, q, k: _rotate_two(p, q, k, once=True))(positions, q, k)
    want = jax.jit(lambda p, q, k: _rotate_two(p, q, k, once=False))(positions, q, k)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_pytrees_and_the_untaken_branch_shapes():
    positions = jnp.arange(4, dtype=jnp.int32)
    out = jax.jit(lambda p: materialize(lambda x: {"a": x * 2, "b": (x + 1.0,)}, p, p * 1.0))(
        positions
    )
    np.testing.assert_array_equal(np.asarray(out["a"]), [0, 2, 4, 6])
    np.testing.assert_array_equal(np.asarray(out["b"][0]), [1, 2, 3, 4])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the conditional is CPU-only")
def test_cosine_is_evaluated_once_not_inside_each_consumer():
    # Without materialize XLA:CPU fuses the cosine into the rotation of q and of k (at least
    # two evaluations, each per element of a [T, heads, head_dim] tensor); with it, once.
    assert _optimized_hlo(once=False).count(" cosine(") >= 2
    assert _optimized_hlo(once=True).count(" cosine(") == 1
