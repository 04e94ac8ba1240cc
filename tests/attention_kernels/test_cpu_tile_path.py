"""The CPU kernel's tile path (``amx_attention.h`` for prefill rows, ``amx_decode_attention.h``
for the few rows of decode tokens): with a bf16 cache, pages of a multiple of 16 tokens and
head_dim 64 / 128 / 256 it runs on the AMX tile unit where the CPU has one, with queries and
probabilities split into three bf16 parts, so it keeps the kernel's contract:
equal to the XLA kernel within 1e-5 for fp32 queries over a bf16 cache. On other CPUs these
layouts take the vector path (prefill rows the rows path on AVX-512), which must meet the same
bound. Both run in every case on an AMX CPU (the second in a fresh interpreter with
``ESURGE_CPU_AMX=0``)."""

from __future__ import annotations

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu import kernel
from esurge_attention_xla.kernel import ragged_paged_attention as xla

from tests.attention.ragged_batches import random_batch

# (page size, q heads, kv heads, head dim, options)
CASES = {
    "ps16-gqa3-d64": (16, 9, 3, 64, {}),
    "ps16-gqa4-d128-window": (16, 8, 2, 128, {"sliding_window": 20}),
    "ps32-mha-d64-chunk": (32, 4, 4, 64, {"chunk_size": 24}),
    "ps16-gqa16-d64": (16, 16, 1, 64, {}),
    "ps16-gqa2-d256-window": (16, 4, 2, 256, {"sliding_window": 37}),
}


def _case(name: str, seed: int, num_tokens: int = 160, max_num_seqs: int = 6):
    page_size, q_heads, kv_heads, head_dim, options = CASES[name]
    limit = options.get("sliding_window") or options.get("chunk_size")
    batch = random_batch(
        np.random.default_rng(seed),
        num_tokens=num_tokens,
        max_num_seqs=max_num_seqs,
        pages_per_seq=6,
        page_size=page_size,
        num_q_heads=q_heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        release_before=limit,
        null_page_fill=np.nan,
    )
    queries, kv_pages, *meta = batch.inputs()
    inputs = [jnp.asarray(queries), jnp.asarray(kv_pages, jnp.bfloat16), *map(jnp.asarray, meta)]
    return batch, inputs, {"sm_scale": 0.3, **options}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", CASES)
def test_fp32_queries_over_a_bf16_cache_match_xla_within_1e_5(name, seed):
    batch, inputs, options = _case(name, seed)
    n = batch.num_real_tokens
    got = np.asarray(kernel.ragged_paged_attention(*inputs, **options))
    want = np.asarray(xla(*inputs, **options))
    assert np.isfinite(got[:n]).all()  # the NaN null page never leaks in
    np.testing.assert_allclose(got[:n], want[:n], atol=1e-5)
    assert not got[n:].any()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", CASES)
def test_decode_and_short_chunks_match_xla_within_1e_5(name, seed):
    # 16 tokens over up to 9 sequences: mostly single decode tokens, some chunks of 2-7
    # (rows of one token times the group; with the group at most 5, the few-rows tile kernel)
    batch, inputs, options = _case(name, seed, num_tokens=16, max_num_seqs=10)
    n = batch.num_real_tokens
    got = np.asarray(kernel.ragged_paged_attention(*inputs, **options))
    want = np.asarray(xla(*inputs, **options))
    assert np.isfinite(got[:n]).all()
    np.testing.assert_allclose(got[:n], want[:n], atol=1e-5)
    assert not got[n:].any()


def test_bf16_queries_take_the_same_path_within_bf16_rounding():
    batch, inputs, options = _case("ps16-gqa3-d64", 3)
    n = batch.num_real_tokens
    inputs[0] = inputs[0].astype(jnp.bfloat16)
    got = np.asarray(kernel.ragged_paged_attention(*inputs, **options).astype(jnp.float32))
    want = np.asarray(xla(*inputs, **options).astype(jnp.float32))
    np.testing.assert_allclose(got[:n], want[:n], atol=2e-2, rtol=2e-2)


def test_the_vector_path_gives_the_same_results_with_the_tile_unit_off():
    script = """
import numpy as np
from esurge_attention_cpu import kernel
from tests.attention_kernels.test_cpu_tile_path import CASES, _case
for name in CASES:
    for tag, sizes in (("mixed", {}), ("decode", {"num_tokens": 16, "max_num_seqs": 10})):
        batch, inputs, options = _case(name, 0, **sizes)
        got = np.asarray(kernel.ragged_paged_attention(*inputs, **options))
        np.save(f"{OUT}/{name}-{tag}.npy", got)
print("ok")
"""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = {}
    for setting in ("1", "0"):
        out = os.path.join(
            os.environ.get("TMPDIR", "/tmp"), f"esurge-tiles-{os.getpid()}-{setting}"
        )
        os.makedirs(out, exist_ok=True)
        run = subprocess.run(
            [sys.executable, "-c", f"OUT = {out!r}\n" + script],
            env={**os.environ, "ESURGE_CPU_AMX": setting},
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results[setting] = {
            (name, tag): np.load(os.path.join(out, f"{name}-{tag}.npy"))
            for name in CASES
            for tag in ("mixed", "decode")
        }
    for name in CASES:
        for tag, sizes in (("mixed", {}), ("decode", {"num_tokens": 16, "max_num_seqs": 10})):
            batch, _, _ = _case(name, 0, **sizes)
            n = batch.num_real_tokens
            np.testing.assert_allclose(
                results["1"][name, tag][:n], results["0"][name, tag][:n], atol=1e-5
            )
