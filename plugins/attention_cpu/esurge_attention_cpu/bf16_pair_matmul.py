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
import numpy as np

from esurge_attention_cpu.ffi_targets import (
    BF16_PACKED_GATED_MATMUL,
    BF16_PACKED_MATMUL,
    BF16_PAIR_MATMUL,
    register_ffi_targets,
)

__all__ = [
    "ACTIVATION_DTYPES",
    "COLUMN_MULTIPLE",
    "GATE_ACTIVATIONS",
    "PACKED_BLOCK_COLUMNS",
    "bf16_packed_gated_matmul",
    "bf16_packed_matmul",
    "bf16_pair_matmul",
    "pack_bf16_weight",
    "unpack_bf16_weight",
]

#: Dtypes of x and y the kernel reads and writes (w is always bfloat16).
ACTIVATION_DTYPES = frozenset({"float32", "bfloat16"})
#: The kernel computes whole vectors of 16 output columns: N must be a multiple of this.
COLUMN_MULTIPLE = 16


def _check_activation_dtypes(kernel: str, x_dtype, out_dtype) -> None:
    """Raise ValueError naming ``kernel`` where x's or the result's dtype is not one the
    kernels read and write (``ACTIVATION_DTYPES``)."""
    for name, dtype in (("x", x_dtype), ("out_dtype", out_dtype)):
        if jnp.dtype(dtype).name not in ACTIVATION_DTYPES:
            raise ValueError(
                f"{kernel}: {name} dtype {jnp.dtype(dtype).name} is not one of "
                f"{sorted(ACTIVATION_DTYPES)}"
            )


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
    _check_activation_dtypes("bf16_pair_matmul", x.dtype, out_dtype)
    register_ffi_targets()
    call = jax.ffi.ffi_call(BF16_PAIR_MATMUL, jax.ShapeDtypeStruct((x.shape[0], n), out_dtype))
    return call(x, w, jnp.asarray(num_rows, jnp.int32).reshape(1), transpose_w=transpose_w)


#: Output columns per packed block (the kernel's work unit).
PACKED_BLOCK_COLUMNS = 64


def pack_bf16_weight(w: jax.Array, *, transpose_w: bool = False) -> jax.Array:
    """``w`` (bf16 ``[K, N]``, or ``[N, K]`` with ``transpose_w``) in the packed kernel's layout.

    Returns ``uint32 [ceil(N / 64), ceil(K / 2), 64]``: block ``b``, pair ``p``, column ``j``
    holds ``(w[2p, 64b + j], w[2p + 1, 64b + j])`` (the even ``k`` in the low half), zeros
    where ``k`` or the column is past the end.
    """
    if jnp.dtype(w.dtype).name != "bfloat16" or w.ndim != 2:
        raise ValueError(f"pack_bf16_weight takes a bf16 matrix; got {w.dtype} {w.shape}")
    if transpose_w:
        w = w.T
    k, n = w.shape
    pairs = -(-k // 2)
    blocks = -(-n // PACKED_BLOCK_COLUMNS)
    w = jnp.pad(w, ((0, 2 * pairs - k), (0, blocks * PACKED_BLOCK_COLUMNS - n)))
    w = w.reshape(pairs, 2, blocks, PACKED_BLOCK_COLUMNS).transpose(2, 0, 3, 1)
    # The two halves joined with integer ops, not one bitcast of [..., 2] bf16 to uint32: where
    # XLA folds the packing of a constant weight (a weight captured by a jitted function),
    # that bitcast after the pad and transpose folded to wrong words (jaxlib 0.10.2, every
    # shape tried), and the kernels then silently multiplied by garbage.
    halves = jax.lax.bitcast_convert_type(w, jnp.uint16).astype(jnp.uint32)
    return halves[..., 0] | (halves[..., 1] << 16)


def unpack_bf16_weight(packed: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """The bf16 ``[K, N]`` matrix of ``shape`` that ``pack_bf16_weight`` packed."""
    k, n = shape
    blocks, pairs, columns = packed.shape
    w = jax.lax.bitcast_convert_type(packed, jnp.bfloat16)  # [blocks, pairs, 64, 2]
    w = w.transpose(1, 3, 0, 2).reshape(2 * pairs, blocks * columns)
    return w[:k, :n]


def bf16_packed_matmul(
    x: jax.Array, w_packed: jax.Array, num_rows: jax.Array, *, n: int, out_dtype=None
) -> jax.Array:
    """``x [M, K] @ w [K, N]`` for ``num_rows`` rows, ``w`` given as ``pack_bf16_weight(w)``.

    The semantics of ``bf16_pair_matmul``; ``n`` is N (a multiple of 16).

    Raises:
        ValueError: shapes or dtypes the kernel does not take (named in the message).
    """
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    pairs = -(-x.shape[1] // 2)
    expected = (-(-n // PACKED_BLOCK_COLUMNS), pairs, PACKED_BLOCK_COLUMNS)
    if x.ndim != 2 or w_packed.shape != expected or w_packed.dtype != jnp.uint32:
        raise ValueError(
            f"bf16_packed_matmul: x {x.shape} and N = {n} need w_packed uint32{expected}, "
            f"got {w_packed.dtype}{tuple(w_packed.shape)}"
        )
    if n % COLUMN_MULTIPLE:
        raise ValueError(f"bf16_packed_matmul: N must be a multiple of {COLUMN_MULTIPLE}, got {n}")
    _check_activation_dtypes("bf16_packed_matmul", x.dtype, out_dtype)
    register_ffi_targets()
    call = jax.ffi.ffi_call(BF16_PACKED_MATMUL, jax.ShapeDtypeStruct((x.shape[0], n), out_dtype))
    return call(x, w_packed, jnp.asarray(num_rows, jnp.int32).reshape(1))


#: Activations the gated product computes (``esurge_core.models.activations`` names), with
#: their codes in ``gate_activations.h``.
GATE_ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}


def bf16_packed_gated_matmul(
    x: jax.Array,
    w_packed: jax.Array,
    num_rows: jax.Array,
    *,
    n: int,
    activation: str,
    out_dtype=None,
) -> jax.Array:
    """``act(x @ w[:, :n/2]) * (x @ w[:, n/2:])`` for ``num_rows`` rows: a gated MLP's fused
    gate/up product, ``w [K, n]`` given as ``pack_bf16_weight(w)``, ``act`` applied as the
    kernel writes its result (``gate_activations.h``). Needs AVX512-BF16
    (``bf16_pairs_available``).

    The product's semantics are ``bf16_packed_matmul``'s; ``n / 2`` must be a multiple of 64
    (each packed block is then all gate or all up columns). Returns ``[M, n / 2]``.

    Raises:
        ValueError: an activation, shape or dtype the kernel does not take (named in the
            message).
    """
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    if activation not in GATE_ACTIVATIONS:
        raise ValueError(
            f"bf16_packed_gated_matmul: activation {activation!r} is not one of "
            f"{sorted(GATE_ACTIVATIONS)}"
        )
    if n % (2 * PACKED_BLOCK_COLUMNS):
        raise ValueError(
            f"bf16_packed_gated_matmul: N must be a multiple of {2 * PACKED_BLOCK_COLUMNS} "
            f"(two halves of whole {PACKED_BLOCK_COLUMNS}-column blocks), got {n}"
        )
    pairs = -(-x.shape[1] // 2)
    expected = (n // PACKED_BLOCK_COLUMNS, pairs, PACKED_BLOCK_COLUMNS)
    if x.ndim != 2 or w_packed.shape != expected or w_packed.dtype != jnp.uint32:
        raise ValueError(
            f"bf16_packed_gated_matmul: x {x.shape} and N = {n} need w_packed uint32{expected}, "
            f"got {w_packed.dtype}{tuple(w_packed.shape)}"
        )
    _check_activation_dtypes("bf16_packed_gated_matmul", x.dtype, out_dtype)
    register_ffi_targets()
    call = jax.ffi.ffi_call(
        BF16_PACKED_GATED_MATMUL, jax.ShapeDtypeStruct((x.shape[0], n // 2), out_dtype)
    )
    return call(
        x,
        w_packed,
        jnp.asarray(num_rows, jnp.int32).reshape(1),
        activation=np.int32(GATE_ACTIVATIONS[activation]),
    )
