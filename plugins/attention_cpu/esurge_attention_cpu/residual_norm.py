"""``add_rms_norm``: a residual add and the RMSNorm after it in one native call (fp32 rows).

See ``residual_norm.cc`` for why; the model reaches it through
``esurge_core.models.norms.add_rms_norm`` when the ``cpu`` backend is active.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from esurge_attention_cpu.ffi_targets import ADD_RMS_NORM, register_ffi_targets

#: The weight dtypes the kernel widens itself.
WEIGHT_DTYPES = ("float32", "bfloat16")


def add_rms_norm(
    x: jax.Array, delta: jax.Array, weight: jax.Array, eps: float
) -> tuple[jax.Array, jax.Array]:
    """``(s, weight * (s * rsqrt(mean(s * s, -1) + eps)))`` with ``s = x + delta``, per row.

    ``x`` and ``delta`` are ``float32 [M, K]``, ``weight`` ``[K]`` in float32 or bfloat16; both
    results are float32 ``[M, K]``.

    Raises:
        ValueError: shapes or dtypes the kernel does not take, or a negative ``eps``.
    """
    if x.ndim != 2 or delta.shape != x.shape or weight.shape != (x.shape[1],):
        raise ValueError(
            f"add_rms_norm: x {x.shape} and delta {delta.shape} must be the same [M, K] and "
            f"weight {weight.shape} [K]"
        )
    if jnp.dtype(x.dtype).name != "float32" or jnp.dtype(delta.dtype).name != "float32":
        raise ValueError(f"add_rms_norm: x and delta must be float32, got {x.dtype}, {delta.dtype}")
    if jnp.dtype(weight.dtype).name not in WEIGHT_DTYPES:
        raise ValueError(f"add_rms_norm: weight must be one of {WEIGHT_DTYPES}, got {weight.dtype}")
    if not eps >= 0:
        raise ValueError(f"add_rms_norm: eps must be >= 0, got {eps}")
    register_ffi_targets()
    row = jax.ShapeDtypeStruct(x.shape, jnp.float32)
    call = jax.ffi.ffi_call(ADD_RMS_NORM, (row, row))
    return tuple(call(x, delta, weight, eps=np.float32(eps)))
