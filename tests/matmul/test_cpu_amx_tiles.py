"""The bf16 weight products on the AMX tile unit (``amx_tiles.h``): on a CPU with AMX-BF16
products of 8 rows or more and K a multiple of 32 run there, the rest (and every product with
``ESURGE_CPU_AMX=0``, or on other CPUs) on the AVX-512 / portable kernels. Both settings run
in fresh interpreters (the choice is read once per process) over the tile edge cases: partial
tiles of rows, an odd number of 16-column tiles, blocks narrower than 64 columns, bf16 and fp32
operands, packed and unpacked weights stored either way, products of several chunks of rows
and outputs large enough to be streamed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from esurge_attention_cpu.bf16_pair_matmul import (
    bf16_packed_matmul, bf16_pair_matmul, pack_bf16_weight)
from esurge_attention_cpu.ffi_targets import amx_tiles_usable, bf16_pairs_available
from esurge_core.matmul.backend import xla_matmul

rng = np.random.default_rng(0)
packed = jax.jit(
    lambda x, p, n, out: bf16_packed_matmul(x, p, n, n=out.shape[0], out_dtype=out.dtype),
)
checked = 0
# The last two: several chunks of rows each running across every column block, and an fp32
# output of more than 1 MiB, which the tile path writes with streaming stores (amx_tiles.h).
for m, rows, k, n in [(8, 8, 64, 48), (16, 16, 576, 80), (32, 17, 576, 1536), (48, 45, 64, 16),
                      (64, 64, 1536, 576), (300, 300, 576, 192), (128, 33, 96, 64), (40, 40, 70, 64),
                      (1100, 1037, 1536, 320), (640, 600, 576, 528)]:
    for x_dtype in ("float32", "bfloat16"):
        for out_dtype in ("float32", "bfloat16"):
            x = jnp.asarray(rng.standard_normal((m, k)), x_dtype)
            w = jnp.asarray(rng.standard_normal((k, n)) * 0.1, jnp.bfloat16)
            want = np.asarray(xla_matmul(x, w, out_dtype=jnp.float32))[:rows]
            tol = 2e-2 if "bfloat16" in (x_dtype, out_dtype) else 1e-4
            results = [packed(x, pack_bf16_weight(w), jnp.int32(rows), jnp.zeros(n, out_dtype))]
            if bf16_pairs_available():
                for transpose in (False, True):
                    stored = w.T if transpose else w
                    results.append(bf16_pair_matmul(
                        x, stored, jnp.int32(rows), transpose_w=transpose, out_dtype=out_dtype))
            for got in results:
                got = np.asarray(got, np.float32)
                np.testing.assert_allclose(got[:rows], want, rtol=tol, atol=tol)
                assert not got[rows:].any(), (m, rows, k, n)
                checked += 1
print("amx", amx_tiles_usable(), "checked", checked)
"""


def _cpu_has_amx_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in info)
    except OSError:
        return False


@pytest.mark.parametrize("amx_setting", [None, "0"])
def test_products_match_xla_with_the_tile_unit_on_and_off(amx_setting):
    env = {key: value for key, value in os.environ.items() if key != "ESURGE_CPU_AMX"}
    if amx_setting is not None:
        env["ESURGE_CPU_AMX"] = amx_setting
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    usable = words[words.index("amx") + 1] == "True"
    assert int(words[words.index("checked") + 1]) >= 32
    if amx_setting == "0" or not _cpu_has_amx_bf16():
        assert not usable  # switched off, or a CPU without the unit: never claimed
