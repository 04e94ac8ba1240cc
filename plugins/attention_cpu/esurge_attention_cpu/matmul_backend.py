"""The ``cpu`` matmul backend: decode-sized weight products through the native kernel."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from esurge_attention_cpu.ffi_targets import register_ffi_targets
from esurge_attention_cpu.small_matmul import SUPPORTED_DTYPES, small_matmul

#: Largest padded row count the kernel takes; bigger products stay with XLA. Measured on the
#: 2-core machine of docs/PERFORMANCE.md (SmolLM2, bf16 weights, median decode step,
#: benchmarks/decode_step_times.py): 1 / 4 / 8 sequences 10.0 / 13.3 / 18.9 ms against XLA's
#: 17.8 / 22.8 / 24.1 ms; with the limit raised to 32, the kernel lost at 16 and 32 rows
#: (33.5 vs 30.4 ms, 57.0 vs 43.9 ms).
DEFAULT_MAX_ROWS = 8


@dataclass(frozen=True)
class CPUMatmulBackend:
    """Products of at most ``max_rows`` (padded) rows through ``small_matmul``; XLA the rest.

    Creating the backend builds the kernels for this machine if they are not cached yet, so a
    missing compiler is reported when the engine starts, not in the middle of tracing.
    """

    name: str = "cpu"
    max_rows: int = DEFAULT_MAX_ROWS

    def __post_init__(self) -> None:
        register_ffi_targets()

    def handles(self, x, w, *, transpose_w: bool, out_dtype) -> bool:
        dtypes = (x.dtype, w.dtype, out_dtype)
        return (
            len(x.shape) == 2
            and len(w.shape) == 2
            and x.shape[0] <= self.max_rows
            and all(jnp.dtype(d).name in SUPPORTED_DTYPES for d in dtypes)
        )

    def matmul(self, x, w, num_rows, *, transpose_w: bool, out_dtype) -> jax.Array:
        return small_matmul(x, w, num_rows, transpose_w=transpose_w, out_dtype=out_dtype)
