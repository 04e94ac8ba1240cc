"""The K/V page write that feeds the kernel: one scatter of each token's K and V to its slot."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def write_kv_pages(
    kv_pages: jax.Array, keys: jax.Array, values: jax.Array, slot_mapping: jax.Array
) -> jax.Array:
    """Write each token's K and V into its slot of the paged cache (contract A).

    Args:
        kv_pages: ``[num_pages, page_size, 2 * num_kv_heads, head_dim]``, K/V interleaved.
        keys: ``[num_tokens, num_kv_heads, head_dim]``.
        values: ``[num_tokens, num_kv_heads, head_dim]``.
        slot_mapping: ``int32[num_tokens]``; ``page_id * page_size + offset``. Padding tokens
            point into page 0 (the null page).

    Returns:
        The updated pages (in place when donated); keys/values cast to the cache dtype.
    """
    validate_kv_write(kv_pages, keys, values, slot_mapping)
    num_pages, page_size, combined_heads, head_dim = kv_pages.shape
    # [T, Hkv, 2, D] -> [T, 2 * Hkv, D] puts K of head h at 2h and V at 2h + 1.
    new = jnp.stack([keys, values], axis=2).reshape(-1, combined_heads, head_dim)
    flat = kv_pages.reshape(num_pages * page_size, combined_heads, head_dim)
    flat = flat.at[slot_mapping].set(new.astype(kv_pages.dtype), mode="drop")
    return flat.reshape(kv_pages.shape)


def validate_kv_write(
    kv_pages: jax.Array, keys: jax.Array, values: jax.Array, slot_mapping: jax.Array
) -> None:
    """Check the static shapes of a K/V page write.

    Raises:
        ValueError: naming the mismatched shapes.
    """
    _, _, combined_heads, head_dim = kv_pages.shape
    expected = (keys.shape[0], combined_heads // 2, head_dim)
    if keys.shape != expected or values.shape != expected:
        raise ValueError(
            f"keys and values must both be {expected} for kv_pages {kv_pages.shape}, "
            f"got {keys.shape} and {values.shape}"
        )
    if slot_mapping.shape != (keys.shape[0],):
        raise ValueError(
            f"slot_mapping must have shape ({keys.shape[0]},), got {slot_mapping.shape}"
        )
