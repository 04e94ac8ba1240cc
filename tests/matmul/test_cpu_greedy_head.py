"""The greedy tokens of a decode step from the LM head's int8 screen plus exact logits for the
columns it cannot rule out (``bf16_greedy_head``), against the engine's argmax of the bf16
logits the packed product computes; and the ``cpu`` backend and engine using it. The kernel
needs AVX512-BF16 and AVX512-VNNI; elsewhere the backend does not offer it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from esurge_attention_cpu.bf16_pair_matmul import bf16_packed_matmul, pack_bf16_weight
from esurge_attention_cpu.ffi_targets import greedy_head_available
from esurge_attention_cpu.greedy_head import (
    GREEDY_MAX_K,
    bf16_greedy_head,
    pack_greedy_screen,
)
from esurge_attention_cpu.matmul_backend import GREEDY_HEAD_ENV, CPUMatmulBackend

from esurge_core.matmul.greedy_head import GREEDY_HEAD_KEY
from esurge_core.sampling.sampler import first_argmax

needs_kernel = pytest.mark.skipif(
    not greedy_head_available(), reason="needs AVX512-BF16 and AVX512-VNNI"
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _head(w: np.ndarray):
    w = jnp.asarray(w, jnp.bfloat16)
    packed = pack_bf16_weight(w)
    screen = pack_greedy_screen(packed, tuple(w.shape))
    assert screen is not None
    return packed, screen


def _tokens(x, packed, screen, num_rows):
    n = packed.shape[0] * packed.shape[2]
    logits = bf16_packed_matmul(x, packed, jnp.int32(num_rows), n=n, out_dtype=jnp.float32)
    want = np.asarray(first_argmax(logits))[:num_rows]
    got = np.asarray(bf16_greedy_head(x, packed, screen, jnp.int32(num_rows)))
    assert (got[num_rows:] == 0).all()
    return got[:num_rows], want


@needs_kernel
@pytest.mark.parametrize(
    ("m", "k", "n", "x_dtype"),
    [
        (1, 576, 4096, "float32"),
        (3, 576, 1024, "bfloat16"),
        (8, 35, 640, "float32"),
        (5, 1032, 128, "float32"),
        (2, 2, 64, "float32"),
    ],
)
def test_tokens_equal_the_argmax_of_the_bf16_logits(rng, m, k, n, x_dtype):
    packed, screen = _head(rng.standard_normal((k, n)) * 0.05)
    for scale in (0.01, 1.0, 30.0):
        x = jnp.asarray(rng.standard_normal((m, k)) * scale, x_dtype)
        for num_rows in {m, max(1, m - 1)}:
            got, want = _tokens(x, packed, screen, num_rows)
            np.testing.assert_array_equal(got, want)


@needs_kernel
def test_ties_and_near_ties_are_decided_by_the_exact_logits(rng):
    """Columns the screen cannot tell apart: copies of one column (a tie: the first wins) and
    copies changed by one bf16 step in one weight (decided by the exact sums alone)."""
    k, n = 576, 256
    base = rng.standard_normal(k) * 0.05
    w = rng.standard_normal((k, n)) * 0.01
    for column in (7, 100, 101, 250):
        w[:, column] = base
    bits = np.asarray(jnp.asarray(w, jnp.bfloat16)).view(np.uint16).copy()
    bits[3, 101] += 1  # one step of its last mantissa bit
    bits[5, 250] -= 1
    w = np.asarray(bits.view(jnp.bfloat16), np.float32)
    packed, screen = _head(w)
    x = jnp.asarray(np.tile(base, (4, 1)) * np.array([[1.0], [-1.0], [3.0], [0.5]]), jnp.float32)
    got, want = _tokens(x, packed, screen, 4)
    np.testing.assert_array_equal(got, want)
    zero = jnp.zeros((2, k), jnp.float32)  # every logit 0: the first column
    np.testing.assert_array_equal(_tokens(zero, packed, screen, 2)[0], [0, 0])


@needs_kernel
def test_rows_with_non_finite_values_follow_the_argmax_of_their_logits(rng):
    k, n = 64, 192
    packed, screen = _head(rng.standard_normal((k, n)) * 0.05)
    x = np.asarray(rng.standard_normal((3, k)), np.float32)
    x[0, 5] = np.nan  # NaN logits: index 0, as first_argmax gives
    x[1, :] = 0.0
    x[1, 9] = np.inf  # +-inf and NaN logits
    x[2, 1] = 3e38  # finite, but sums too large for the screen's bound
    got, want = _tokens(jnp.asarray(x), packed, screen, 3)
    np.testing.assert_array_equal(got, want)
    assert got[0] == 0


def test_the_screen_declines_heads_it_cannot_bound(rng):
    w = rng.standard_normal((64, 128)) * 0.05
    assert pack_greedy_screen(pack_bf16_weight(jnp.asarray(w, jnp.bfloat16)), (64, 128))
    bad = w.copy()
    bad[3, 4] = np.inf
    assert pack_greedy_screen(pack_bf16_weight(jnp.asarray(bad, jnp.bfloat16)), (64, 128)) is None
    narrow = jnp.asarray(w[:, :80], jnp.bfloat16)  # not whole 64-column blocks
    assert pack_greedy_screen(pack_bf16_weight(narrow), (64, 80)) is None
    deep = jnp.asarray(rng.standard_normal((GREEDY_MAX_K + 2, 64)), jnp.bfloat16)
    assert pack_greedy_screen(pack_bf16_weight(deep), tuple(deep.shape)) is None


def test_the_screen_bounds_every_column_of_a_real_sized_head(rng):
    """The screen's constants (numpy, float64): |exact - approximate| <= bound per column, for
    x quantised as the kernel does."""
    k, n = 576, 512
    w = np.asarray(jnp.asarray(rng.standard_normal((k, n)) * 0.05, jnp.bfloat16), np.float64)
    screen = pack_greedy_screen(pack_bf16_weight(jnp.asarray(w, jnp.bfloat16)), (k, n))
    q = np.asarray(screen.weights, np.float64).reshape(n // 64, k // 2, 64, 2)
    q = q.transpose(1, 3, 0, 2).reshape(k, n)
    scale = np.asarray(screen.scale, np.float64)
    x = np.asarray(jnp.asarray(rng.standard_normal(k) * 2, jnp.bfloat16), np.float64)
    t = np.float32(np.abs(x).max() / 16383)
    p = np.rint(x / t)
    approx = t * scale * (p @ q)
    bound = np.abs(x).sum() * np.asarray(screen.err_l1) + t * np.asarray(screen.err_t)
    exact = x @ w
    assert (np.abs(exact - approx) <= bound).all()
    assert np.median(bound) < 0.5 * np.std(exact)  # tight enough to rule most columns out


@needs_kernel
def test_mismatched_shapes_are_refused(rng):
    packed, screen = _head(rng.standard_normal((64, 128)) * 0.05)
    with pytest.raises(ValueError, match="does not fit the packed head"):
        bf16_greedy_head(jnp.zeros((1, 66), jnp.float32), packed, screen, jnp.int32(1))
    with pytest.raises(ValueError, match="x must be float32 or bfloat16"):
        bf16_greedy_head(jnp.zeros((1, 64), jnp.int32), packed, screen, jnp.int32(1))


def test_the_backend_offers_the_screen_only_where_it_can_run(monkeypatch):
    head = jax.ShapeDtypeStruct((576, 49152), jnp.bfloat16)
    backend = CPUMatmulBackend()
    if greedy_head_available():
        assert backend.greedy_head_bytes(head) == 576 * 49152 + 12 * 49152
        assert backend.takes_greedy_head(1)
        assert not backend.takes_greedy_head(16)
    else:
        assert backend.greedy_head_bytes(head) == 0
        assert not backend.takes_greedy_head(1)
    assert backend.greedy_head_bytes(jax.ShapeDtypeStruct((576, 100), jnp.bfloat16)) == 0
    assert backend.greedy_head_bytes(jax.ShapeDtypeStruct((576, 128), jnp.float32)) == 0
    monkeypatch.setenv(GREEDY_HEAD_ENV, "0")
    off = CPUMatmulBackend()
    assert off.greedy_head_bytes(head) == 0 and not off.takes_greedy_head(1)


def test_engine_tokens_are_the_same_with_the_screen_and_without(monkeypatch):
    """SmolLM2 in bf16 through the ``cpu`` backend: greedy decode with the screen (where the
    CPU has it) and with every logit computed give the same tokens, batch 1 and batch 3."""
    from esurge_core import SamplingParams, eSurge

    prompts = ["The capital of France is", "def fibonacci(n):", "1, 2, 3,"]
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    tokens = {}
    for setting in ("1", "0"):
        monkeypatch.setenv(GREEDY_HEAD_ENV, setting)
        engine = eSurge(
            "smollm2-135m-instruct",
            matmul="cpu",
            param_dtype="bfloat16",
            max_model_len=128,
            max_num_seqs=4,
            page_size=16,
            kv_cache_memory=64 << 20,
        )
        try:
            screened = GREEDY_HEAD_KEY in engine.runner.params
            assert screened == (setting == "1" and greedy_head_available())
            together = engine.generate(prompts, params)
            alone = engine.generate(prompts[:1], params)
        finally:
            engine.close()
        tokens[setting] = [list(o.outputs[0].token_ids) for o in [*together, *alone]]
    assert tokens["1"] == tokens["0"]
    assert tokens["1"][0] == tokens["1"][3]
