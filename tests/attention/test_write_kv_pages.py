"""Specification of ``write_kv_pages``: each token's K/V lands in its slot, nothing else moves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_xla.kernel import write_kv_pages

_write = jax.jit(write_kv_pages, donate_argnums=0)


@pytest.mark.parametrize("page_size", [1, 4, 16])
def test_each_token_lands_in_its_slot_and_other_slots_are_untouched(page_size):
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    num_pages, num_kv_heads, head_dim, num_real, num_padding = 12, 2, 8, 9, 3
    pages = rng.standard_normal((num_pages, page_size, 2 * num_kv_heads, head_dim)).astype(
        np.float32
    )
    keys = rng.standard_normal((num_real + num_padding, num_kv_heads, head_dim)).astype(np.float32)
    values = rng.standard_normal(keys.shape).astype(np.float32)
    # Real tokens: distinct random slots outside page 0; padding tokens: slots in page 0.
    real_slots = rng.choice(np.arange(page_size, num_pages * page_size), num_real, replace=False)
    padding_slots = rng.integers(0, page_size, num_padding)
    slots = np.concatenate([real_slots, padding_slots]).astype(np.int32)

    out = np.asarray(_write(jnp.asarray(pages), jnp.asarray(keys), jnp.asarray(values), slots))

    flat_out = out.reshape(num_pages * page_size, num_kv_heads, 2, head_dim)
    flat_before = pages.reshape(num_pages * page_size, num_kv_heads, 2, head_dim)
    np.testing.assert_array_equal(flat_out[real_slots, :, 0], keys[:num_real])
    np.testing.assert_array_equal(flat_out[real_slots, :, 1], values[:num_real])
    untouched = np.setdiff1d(np.arange(page_size, num_pages * page_size), real_slots)
    np.testing.assert_array_equal(flat_out[untouched], flat_before[untouched])


def test_keys_and_values_interleave_per_kv_head():
    pages = jnp.zeros((2, 1, 4, 3), jnp.float32)
    keys = jnp.array([[[1.0, 1, 1], [2, 2, 2]]])
    values = jnp.array([[[-1.0, -1, -1], [-2, -2, -2]]])
    out = write_kv_pages(pages, keys, values, jnp.array([1], jnp.int32))
    np.testing.assert_array_equal(out[1, 0, :, 0], [1.0, -1.0, 2.0, -2.0])


def test_values_are_cast_to_the_cache_dtype():
    pages = jnp.zeros((2, 2, 2, 4), jnp.bfloat16)
    keys = jnp.full((1, 1, 4), 1.5, jnp.float32)
    out = write_kv_pages(pages, keys, keys, jnp.array([3], jnp.int32))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out[1, 1], np.float32), np.full((2, 4), 1.5))


def test_mismatched_key_shape_is_rejected():
    pages = jnp.zeros((2, 2, 4, 8), jnp.float32)
    keys = jnp.zeros((3, 1, 8), jnp.float32)
    with pytest.raises(ValueError, match=r"keys and values must both be \(3, 2, 8\)"):
        write_kv_pages(pages, keys, keys, jnp.zeros((3,), jnp.int32))
