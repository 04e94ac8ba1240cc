"""Ragged paged attention on CPU: a C++ kernel (``ragged_paged_attention.cc``) called through
``jax.ffi``.

Same contract and semantics as the ``xla`` backend's kernel (contract A, ``docs/attention.md``):
packed ragged queries, a paged K/V cache with K and V interleaved per kv head, full /
sliding-window / chunked causal attention, optional logit soft cap, fp32 softmax. It differs
in how the work is done: each (sequence, kv head, block of query tokens) walks its visible
keys in place in the pages, so K/V are read once, with no gathered copy and no padding to the
bucket's page count; work items are shared by the library's worker pool
(``$ESURGE_CPU_KERNEL_THREADS`` threads, default: every CPU; ``parallel_for.h``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from esurge_attention_cpu.ffi_targets import (
    RAGGED_PAGED_ATTENTION,
    WRITE_KV_PAGES,
    register_ffi_targets,
)
from esurge_core.attention.input_validation import validate_inputs
from esurge_core.attention.kv_write import validate_kv_write

__all__ = ["ragged_paged_attention", "register_kernel", "write_kv_pages"]

#: (queries or new K/V dtype, cache dtype) pairs the native code implements.
SUPPORTED_DTYPES = {("float32", "float32"), ("float32", "bfloat16"), ("bfloat16", "bfloat16")}

#: The fewest keys of a span of a decode token's keys in a step of few work items
#: (``docs/attention.md``).
DECODE_SPAN_MIN_KEYS = 512


def register_kernel() -> None:
    """Build (once per machine) and load the native library, and register its FFI targets."""
    register_ffi_targets()


def ragged_paged_attention(
    queries: jax.Array,
    kv_pages: jax.Array,
    kv_lens: jax.Array,
    page_indices: jax.Array,
    cu_q_lens: jax.Array,
    num_seqs: jax.Array,
    *,
    sm_scale: float = 1.0,
    sliding_window: int | None = None,
    chunk_size: int | None = None,
    soft_cap: float | None = None,
    decode_span_min_keys: int = DECODE_SPAN_MIN_KEYS,
) -> jax.Array:
    """Causal attention of a ragged batch of new tokens over a paged KV cache (on CPU).

    Arguments and result as ``esurge_attention_xla.kernel.ragged_paged_attention``, and
    ``decode_span_min_keys``: in a step of fewer than two work items per thread, a decode
    token's visible keys are attended in equal spans of at least this many keys, one item each,
    as many as make about six items per thread (0: one item per token; a tuning knob, the
    results agree either way within rounding); queries /
    ``kv_pages`` dtypes float32 / float32, float32 / bfloat16 (a bf16 cache under fp32
    activations) or bfloat16 / bfloat16; ``head_dim <= 256`` and
    ``num_q_heads / num_kv_heads <= 32``. Rows of padding tokens are zero.

    Raises:
        ValueError: a static shape or option is invalid (named in the message).
        NativeBuildError: the kernel could not be compiled on this machine.
    """
    validate_inputs(
        queries,
        kv_pages,
        kv_lens,
        page_indices,
        cu_q_lens,
        num_seqs,
        sliding_window=sliding_window,
        chunk_size=chunk_size,
        soft_cap=soft_cap,
    )
    _check_dtypes("queries", queries, kv_pages)
    head_dim = queries.shape[2]
    group = queries.shape[1] // (kv_pages.shape[2] // 2)
    if head_dim > 256 or group > 32:
        raise ValueError(
            f"the cpu kernel supports head_dim <= 256 (got {head_dim}) and "
            f"num_q_heads / num_kv_heads <= 32 (got {group}); use the xla backend"
        )
    if decode_span_min_keys < 0:
        raise ValueError(
            f"decode_span_min_keys must be >= 0 (0: no spans), got {decode_span_min_keys}"
        )
    register_kernel()
    call = jax.ffi.ffi_call(
        RAGGED_PAGED_ATTENTION, jax.ShapeDtypeStruct(queries.shape, queries.dtype)
    )
    return call(
        queries,
        kv_pages,
        jnp.asarray(kv_lens, jnp.int32),
        jnp.asarray(page_indices, jnp.int32),
        jnp.asarray(cu_q_lens, jnp.int32),
        jnp.asarray(num_seqs, jnp.int32),
        sm_scale=np.float32(sm_scale),
        sliding_window=np.int64(sliding_window or 0),
        chunk_size=np.int64(chunk_size or 0),
        decode_span_min_keys=np.int64(decode_span_min_keys),
        soft_cap=np.float32(soft_cap or 0.0),
    )


def write_kv_pages(
    kv_pages: jax.Array, keys: jax.Array, values: jax.Array, slot_mapping: jax.Array
) -> jax.Array:
    """Write each token's K and V at its slot, in place (contract A's page write, natively).

    Same result as ``esurge_core.attention.kv_write.write_kv_pages`` (keys/values rounded to
    the cache dtype; slots outside the cache are skipped), but the cache buffer is updated in
    place through an aliased FFI output: XLA:CPU would widen a bf16 cache to f32 and back for
    its scatter, copying the whole cache per layer per step.
    """
    validate_kv_write(kv_pages, keys, values, slot_mapping)
    _check_dtypes("keys", keys, kv_pages)
    register_kernel()
    call = jax.ffi.ffi_call(
        WRITE_KV_PAGES,
        jax.ShapeDtypeStruct(kv_pages.shape, kv_pages.dtype),
        input_output_aliases={0: 0},
    )
    return call(kv_pages, keys, values.astype(keys.dtype), jnp.asarray(slot_mapping, jnp.int32))


def _check_dtypes(name: str, operand: jax.Array, kv_pages: jax.Array) -> None:
    pair = (jnp.dtype(operand.dtype).name, jnp.dtype(kv_pages.dtype).name)
    if pair not in SUPPORTED_DTYPES:
        raise ValueError(
            f"the cpu kernel supports {name} / kv_pages dtypes {sorted(SUPPORTED_DTYPES)}, "
            f"got {pair[0]} / {pair[1]}"
        )
