"""Check the Triton attention kernel against the XLA backend on an NVIDIA GPU, and time both.

Needs JAX with CUDA (``pip install "jax[cuda12]"``) and the esurge-attention-xla and
esurge-attention-triton distributions. For a decode-heavy and a prefill-heavy random ragged
batch (pages scattered over a shared pool, bf16, 32 query heads / 8 kv heads, head_dim 128,
page size 16) it prints the largest difference between the two kernels and the median time
of each over many runs (``block_until_ready`` after every call). Runs in well under five
minutes. Run:

    PYTHONPATH=. python benchmarks/gpu_check.py [--runs 50] [--window 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from esurge_attention_triton.kernel import ragged_paged_attention as triton_attention
from esurge_attention_xla.kernel import ragged_paged_attention as xla_attention

NUM_Q_HEADS, NUM_KV_HEADS, HEAD_DIM, PAGE_SIZE = 32, 8, 128, 16
# name -> (query lengths, context lengths, padded tokens, padded sequences, pages per sequence)
BATCHES = {
    "decode-heavy (64 x 1 token, ctx 1-2k)": ([1] * 64, (1024, 2048), 64, 64, 128),
    "prefill-heavy (4 x 512 + 8 x 1, ctx 512-2k)": (
        [512] * 4 + [1] * 8,
        (512, 2048),
        2048,
        16,
        128,
    ),
}
# bf16 inputs, fp32 softmax in both kernels; they differ in bf16 rounding of P before P @ V.
TOLERANCE = 3e-2


def make_batch(rng: np.random.Generator, q_lens, ctx_range, num_tokens, max_num_seqs, pages):
    """A random ragged batch in contract-A layout (device arrays, bf16 activations)."""
    kv_lens = np.zeros(max_num_seqs, np.int32)
    kv_lens[: len(q_lens)] = [max(q, int(rng.integers(*ctx_range))) for q in q_lens]
    kv_lens = np.minimum(kv_lens, pages * PAGE_SIZE)
    num_pages = 1 + max_num_seqs * pages
    pool = rng.permutation(np.arange(1, num_pages)).astype(np.int32)
    page_indices = np.zeros((max_num_seqs, pages), np.int32)
    for i, kv_len in enumerate(kv_lens[: len(q_lens)]):
        n = -(-int(kv_len) // PAGE_SIZE)
        page_indices[i, :n] = pool[i * pages : i * pages + n]
    cu_q_lens = np.zeros(max_num_seqs + 1, np.int32)
    cu_q_lens[1 : len(q_lens) + 1] = np.cumsum(q_lens)
    cu_q_lens[len(q_lens) + 1 :] = cu_q_lens[len(q_lens)]
    key = jax.random.key(int(rng.integers(1 << 30)))
    kq, kk = jax.random.split(key)
    queries = jax.random.normal(kq, (num_tokens, NUM_Q_HEADS, HEAD_DIM), jnp.bfloat16)
    kv_pages = jax.random.normal(
        kk, (num_pages, PAGE_SIZE, 2 * NUM_KV_HEADS, HEAD_DIM), jnp.bfloat16
    )
    meta = [jnp.asarray(a) for a in (kv_lens, page_indices, cu_q_lens)]
    return queries, kv_pages, *meta, jnp.asarray([len(q_lens)], jnp.int32)


def median_ms(fn, args, runs: int) -> float:
    """Median wall time of ``fn(*args)`` in milliseconds (compiled and warmed up first)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per kernel and batch")
    parser.add_argument("--window", type=int, default=None, help="sliding window (optional)")
    args = parser.parse_args()
    if jax.default_backend() != "gpu":
        raise SystemExit(
            f"JAX's default backend is {jax.default_backend()!r}: this check needs an NVIDIA GPU "
            'and JAX with CUDA (pip install "jax[cuda12]").'
        )
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    static = {"sm_scale": HEAD_DIM**-0.5, "sliding_window": args.window}
    kernels = {
        "xla": jax.jit(lambda *a: xla_attention(*a, **static)),
        "triton": jax.jit(lambda *a: triton_attention(*a, **static)),
    }
    rng = np.random.default_rng(0)
    print(f"{'batch':46} {'max |diff|':>10} {'xla ms':>9} {'triton ms':>10} {'speed-up':>9}")
    failed = False
    for name, spec in BATCHES.items():
        batch = make_batch(rng, *spec)
        real = int(batch[4][int(batch[5][0])])
        outs = {k: np.asarray(f(*batch)[:real].astype(jnp.float32)) for k, f in kernels.items()}
        diff = float(np.max(np.abs(outs["xla"] - outs["triton"])))
        failed |= not diff <= TOLERANCE
        ms = {k: median_ms(f, batch, args.runs) for k, f in kernels.items()}
        print(
            f"{name:46} {diff:10.2e} {ms['xla']:9.3f} {ms['triton']:10.3f} "
            f"{ms['xla'] / ms['triton']:8.2f}x"
        )
    if failed:
        raise SystemExit(f"FAILED: the kernels differ by more than {TOLERANCE}")
    print(f"OK: triton matches xla within {TOLERANCE} on every batch")


if __name__ == "__main__":
    main()
