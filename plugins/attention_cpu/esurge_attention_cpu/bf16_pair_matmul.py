"""Weight products of batched-decode size with bf16 weights on CPUs with AVX512-BF16: a C++
kernel (``bf16_pair_matmul.cc``) called through ``jax.ffi``.

``y = x @ w`` (``x @ w.T`` with ``transpose_w``) for the first ``num_rows`` rows of ``x``,
``w`` bfloat16, with the semantics of ``esurge_core.matmul``: ``x`` rounded to bf16, exact
products summed in fp32, ``y`` in ``out_dtype``; rows from ``num_rows`` on are zero. Each work
item re-arranges one block of 64 output columns of ``w`` into the pair order of the VDPBF16PS
instruction once and multiplies every real row by it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from esurge_attention_cpu.ffi_targets import BF16_PAIR_MATMUL, register_ffi_targets

__all__ = ["ACTIVATION_DTYPES", "COLUMN_MULTIPLE", "bf16_pair_matmul"]

#: Dtypes of x and y the kernel reads and writes (w is always bfloat16).
ACTIVATION_DTYPES = frozenset({"float32", "bfloat16"})
#: The kernel computes whole vectors of 16 output columns: N must be a multiple of this.
COLUMN_MULTIPLE = 16


def bf16_pair_matmul(
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
        w: weights, bfloat16; N a multiple of 16.
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
        raise ValueError(f"bf16_pair_matmul takes matrices; got x {x.shape} and w {w.shape}")
    k_w = w.shape[1] if transpose_w else w.shape[0]
    n = w.shape[0] if transpose_w else w.shape[1]
    if x.shape[1] != k_w:
        layout = "[N, K]" if transpose_w else "[K, N]"
        raise ValueError(
            f"bf16_pair_matmul: x has {x.shape[1]} columns but w {layout} {w.shape} has K = {k_w}"
        )
    if n % COLUMN_MULTIPLE:
        raise ValueError(
            f"bf16_pair_matmul: N must be a multiple of {COLUMN_MULTIPLE}, got {n} (w {w.shape})"
        )
    if jnp.dtype(w.dtype).name != "bfloat16":
        raise ValueError(f"bf16_pair_matmul: w must be bfloat16, got {jnp.dtype(w.dtype).name}")
    for name, dtype in (("x", x.dtype), ("out_dtype", out_dtype)):
        if jnp.dtype(dtype).name not in ACTIVATION_DTYPES:
            raise ValueError(
                f"bf16_pair_matmul: {name} dtype {jnp.dtype(dtype).name} is not one of "
                f"{sorted(ACTIVATION_DTYPES)}"
            )
    register_ffi_targets()
    call = jax.ffi.ffi_call(BF16_PAIR_MATMUL, jax.ShapeDtypeStruct((x.shape[0], n), out_dtype))
    return call(x, w, jnp.asarray(num_rows, jnp.int32).reshape(1), transpose_w=transpose_w)
