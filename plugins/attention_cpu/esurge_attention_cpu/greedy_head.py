"""The greedy token of a decode step's rows from an int8 screen of the LM head plus exact
logits for the few columns the screen cannot rule out (``greedy_head.cc``).

``bf16_greedy_head(x, head, screen, num_rows)`` returns what ``first_argmax`` of
``bf16_packed_matmul(x, head)`` returns, bitwise, while reading about half of the head's
bytes: the int8 screen (``pack_greedy_screen``, built once at load) gives every column an
approximate logit and a proven bound on its error, and only the columns whose upper bound
reaches the largest lower bound are computed exactly from the packed bf16 head.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from esurge_attention_cpu.bf16_pair_matmul import PACKED_BLOCK_COLUMNS, unpack_bf16_weight
from esurge_attention_cpu.ffi_targets import BF16_GREEDY_HEAD, register_ffi_targets

__all__ = ["GREEDY_MAX_K", "GreedyScreen", "bf16_greedy_head", "pack_greedy_screen"]

#: Largest K the kernel takes (its int32 sums of int16 x int8 products cannot wrap below).
GREEDY_MAX_K = 1032
#: Each bf16 product sum of K pairs rounds at most 2K times, each within this of its sum.
_FP32_UNIT_ROUNDOFF = 2.0**-24
#: x is quantised to integers of at most this magnitude (``kXLevels`` in the kernel), so
#: its grid error is at most half a step, widened here for the rounding of the step.
_X_GRID_HALF_STEP = 0.5 * (1.0 + 1e-5)
#: Columns packed per float64 slice (bounds the memory packing takes beside the head).
_PACK_COLUMNS = 4096


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["weights", "scale", "err_l1", "err_t"],
    meta_fields=[],
)
@dataclass(frozen=True)
class GreedyScreen:
    """An int8 copy of a ``[K, N]`` head with its per-column error constants.

    Attributes:
        weights: ``int8 [N / 64, ceil(K / 2), 128]``: block ``b``, pair ``p`` holds for each of
            its 64 columns ``j`` the pair ``(q[2p, 64b + j], q[2p + 1, 64b + j])``.
        scale: ``float32 [N]``: column ``n``'s weights are ``scale[n] * q[:, n] + e[:, n]``.
        err_l1: ``float32 [N]``: bounds ``|logit - approximation|`` per unit of ``|x|_1``:
            the largest ``|e[:, n]|`` plus the fp32 rounding of the exact product.
        err_t: ``float32 [N]``: the same per unit of x's quantisation step.
    """

    weights: jax.Array
    scale: jax.Array
    err_l1: jax.Array
    err_t: jax.Array

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.weights, self.scale, self.err_l1, self.err_t))


def _round_up_f32(values: np.ndarray) -> np.ndarray:
    """float64 values as the nearest float32 at or above each."""
    rounded = values.astype(np.float32)
    below = rounded.astype(np.float64) < values
    rounded[below] = np.nextafter(rounded[below], np.float32(np.inf))
    return rounded


def pack_greedy_screen(head_packed: jax.Array, shape: tuple[int, int]) -> GreedyScreen | None:
    """The screen of a bf16 head ``[K, N]`` given packed (``pack_bf16_weight``).

    Returns ``None`` where the kernel cannot take the head: N not a whole number of 64-column
    blocks, K above ``GREEDY_MAX_K``, or a non-finite weight.
    """
    k, n = shape
    if n % PACKED_BLOCK_COLUMNS or k > GREEDY_MAX_K or k == 0:
        return None
    w = np.asarray(unpack_bf16_weight(head_packed, shape).astype(jnp.float32))
    if not np.isfinite(w).all():
        return None
    scale = np.empty(n, np.float32)
    err_l1 = np.empty(n, np.float64)
    err_t = np.empty(n, np.float64)
    q8 = np.zeros((2 * (-(-k // 2)), n), np.int8)
    for start in range(0, n, _PACK_COLUMNS):  # float64 a slice of columns at a time
        cols = slice(start, start + _PACK_COLUMNS)
        chunk = w[:, cols].astype(np.float64)
        largest = np.abs(chunk).max(axis=0)
        scale[cols] = (largest / 127.0).astype(np.float32)
        scale64 = scale[cols].astype(np.float64)
        q = np.clip(np.rint(chunk / np.where(scale64 > 0, scale64, 1.0)), -127, 127)
        err = np.abs(chunk - q * scale64).max(axis=0)
        err_l1[cols] = (err + 2 * k * _FP32_UNIT_ROUNDOFF * largest) * (1.0 + 1e-6)
        err_t[cols] = _X_GRID_HALF_STEP * scale64 * np.abs(q).sum(axis=0) * (1.0 + 1e-6)
        q8[:k, cols] = q.astype(np.int8)
    pairs = -(-k // 2)
    blocks = n // PACKED_BLOCK_COLUMNS
    # [2p + h, 64b + j] -> [b, p, j, h]
    q8 = q8.reshape(pairs, 2, blocks, PACKED_BLOCK_COLUMNS).transpose(2, 0, 3, 1)
    return GreedyScreen(
        weights=jnp.asarray(q8.reshape(blocks, pairs, 2 * PACKED_BLOCK_COLUMNS)),
        scale=jnp.asarray(scale),
        err_l1=jnp.asarray(_round_up_f32(err_l1)),
        err_t=jnp.asarray(_round_up_f32(err_t)),
    )


def bf16_greedy_head(
    x: jax.Array, head_packed: jax.Array, screen: GreedyScreen, num_rows: jax.Array
) -> jax.Array:
    """``first_argmax(bf16_packed_matmul(x, head_packed, num_rows, out_dtype=float32))`` for
    the first ``num_rows`` rows of ``x`` (``int32 [M]``; later rows 0). Needs AVX512-BF16 and
    AVX512-VNNI (``greedy_head_available``), and a row count the products run without the
    AMX tile unit.

    Raises:
        ValueError: shapes or dtypes the kernel does not take (named in the message).
    """
    blocks, pairs, columns = head_packed.shape
    if x.ndim != 2 or pairs != -(-x.shape[1] // 2) or columns != PACKED_BLOCK_COLUMNS:
        raise ValueError(
            f"bf16_greedy_head: x {x.shape} does not fit the packed head {head_packed.shape}"
        )
    if screen.weights.shape != (blocks, pairs, 2 * PACKED_BLOCK_COLUMNS):
        raise ValueError(
            f"bf16_greedy_head: screen {screen.weights.shape} does not fit the packed head "
            f"{head_packed.shape}"
        )
    if jnp.dtype(x.dtype).name not in ("float32", "bfloat16"):
        raise ValueError(f"bf16_greedy_head: x must be float32 or bfloat16, got {x.dtype}")
    register_ffi_targets()
    call = jax.ffi.ffi_call(BF16_GREEDY_HEAD, jax.ShapeDtypeStruct((x.shape[0],), jnp.int32))
    return call(
        x,
        head_packed,
        screen.weights,
        screen.scale,
        screen.err_l1,
        screen.err_t,
        jnp.asarray(num_rows, jnp.int32).reshape(1),
    )
