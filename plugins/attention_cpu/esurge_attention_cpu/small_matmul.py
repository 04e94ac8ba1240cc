"""Weight products with few rows on CPU: a C++ kernel (``small_matmul.cc``) called through
``jax.ffi``.

``y = x @ w`` (``x @ w.T`` with ``transpose_w``) for the first ``num_rows`` rows of ``x``, with
the semantics of ``esurge_core.matmul``: ``x`` rounded to ``w``'s dtype, products summed in
fp32, ``y`` in ``out_dtype``; rows from ``num_rows`` on are zero. Each thread of the
library's worker pool (``parallel_for.h``) streams its own blocks of the weights once for all
real rows, so a decode step costs about one read of the weights, however its bucket is
padded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from esurge_attention_cpu.ffi_targets import SMALL_MATMUL, register_ffi_targets

__all__ = ["SUPPORTED_DTYPES", "small_matmul"]

#: Dtypes of x, w and y the native code reads and writes (any combination).
SUPPORTED_DTYPES = frozenset({"float32", "bfloat16"})


def small_matmul(
    x: jax.Array,
    w: jax.Array,
    num_rows: jax.Array,
    *,
    transpose_w: bool = False,
    out_dtype=None,
) -> jax.Array:
    """``x [M, K] @ w [K, N]`` (``w [N, K]`` with ``transpose_w``) for ``num_rows`` rows.

    Args:
        x: activations, float32 or bfloat16.
        w: weights, float32 or bfloat16.
        num_rows: ``int32`` scalar: how many leading rows of ``x`` are real (clamped to
            ``[0, M]``).
        transpose_w: ``w`` is stored ``[N, K]`` (e.g. a tied embedding as the LM head).
        out_dtype: dtype of the result (default: ``x``'s), float32 or bfloat16.

    Raises:
        ValueError: a rank, size or dtype the kernel does not take (named in the message).
        NativeBuildError: the kernel could not be compiled on this machine.
    """
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    if x.ndim != 2 or w.ndim != 2:
        raise ValueError(f"small_matmul takes matrices; got x {x.shape} and w {w.shape}")
    k_w = w.shape[1] if transpose_w else w.shape[0]
    if x.shape[1] != k_w:
        layout = "[N, K]" if transpose_w else "[K, N]"
        raise ValueError(
            f"small_matmul: x has {x.shape[1]} columns but w {layout} {w.shape} has K = {k_w}"
        )
    for name, dtype in (("x", x.dtype), ("w", w.dtype), ("out_dtype", out_dtype)):
        if jnp.dtype(dtype).name not in SUPPORTED_DTYPES:
            raise ValueError(
                f"small_matmul: {name} dtype {jnp.dtype(dtype).name} is not one of "
                f"{sorted(SUPPORTED_DTYPES)}"
            )
    register_ffi_targets()
    n = w.shape[0] if transpose_w else w.shape[1]
    call = jax.ffi.ffi_call(SMALL_MATMUL, jax.ShapeDtypeStruct((x.shape[0], n), out_dtype))
    return call(x, w, jnp.asarray(num_rows, jnp.int32).reshape(1), transpose_w=transpose_w)
