"""The batched device sampler, checked against straightforward numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esurge_core.sampling import SamplingBatch, SamplingParams, SamplingRow, sample
from esurge_core.sampling.sampler import first_argmax, process_logits
from esurge_core.sampling.truncation import apply_min_p, apply_top_k_top_p

VOCAB = 300  # > TOP_K_FAST_CAP, so the bisection fallbacks are reachable
BATCH = 8


def logits_for(seed, rows=BATCH, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, VOCAB)) * scale).astype(np.float32)


def batch_of(params_list, *, outputs=None, prompts=None, seeds=None, size=BATCH, eos=()):
    rows = []
    for index, params in enumerate(params_list):
        rows.append(
            SamplingRow(
                params,
                seed=seeds[index] if seeds else index,
                prompt_token_ids=prompts[index] if prompts else [],
                output_token_ids=outputs[index] if outputs else [],
            )
        )
    return SamplingBatch.from_requests(rows, size, eos_token_ids=eos)


def tokens(logits, batch):
    return np.asarray(sample(jnp.asarray(logits), batch).token_ids)


def reference_penalties(logits, prompt, output, rep, presence, frequency):
    out = logits.copy()
    seen = sorted(set(prompt) | set(output))
    out[seen] = np.where(out[seen] > 0, out[seen] / rep, out[seen] * rep)
    counts = np.bincount(np.asarray(output, dtype=np.int64), minlength=len(out))
    return out - frequency * counts - presence * (counts > 0)


def test_greedy_rows_take_the_argmax():
    logits = logits_for(0)
    batch = batch_of([SamplingParams(temperature=0.0)] * BATCH)
    assert tokens(logits, batch).tolist() == logits.argmax(-1).tolist()


def test_greedy_ignores_truncation_parameters():
    logits = logits_for(1)
    params = SamplingParams(temperature=0.0, top_k=3, top_p=0.1, min_p=0.9)
    assert tokens(logits, batch_of([params] * BATCH)).tolist() == logits.argmax(-1).tolist()


def test_mixed_batch_keeps_greedy_rows_exact_and_samples_the_others():
    logits = logits_for(2)
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, top_k=1)] * 4
    out = tokens(logits, batch_of(params))
    assert out.tolist() == logits.argmax(-1).tolist()  # top_k=1 is argmax too
    wide = [SamplingParams(temperature=0.0), SamplingParams(temperature=50.0)] * 4
    out = tokens(logits, batch_of(wide))
    assert out[0::2].tolist() == logits.argmax(-1)[0::2].tolist()
    assert out[1::2].tolist() != logits.argmax(-1)[1::2].tolist()


@pytest.mark.parametrize("vocab", [7, 1000, 32000, 49152, 50257, 151936])
def test_first_argmax_matches_numpy_on_any_vocabulary_size(vocab):
    # Whole blocks (49152), smaller power-of-two blocks (32000, 151936) and padded rows
    # (7, 1000, 50257); ties resolve to the first index, as np.argmax does.
    rng = np.random.default_rng(vocab)
    logits = rng.standard_normal((6, vocab)).astype(np.float32)
    logits[1] = 0.0
    logits[2, vocab // 3] = logits[2, vocab - 1] = 100.0
    logits[3] = -np.inf
    logits[3, vocab - 1] = 1.0
    logits[4] = -np.inf
    logits[5, vocab - 1] = 50.0
    got = np.asarray(jax.jit(first_argmax)(jnp.asarray(logits)))
    assert got.tolist() == logits.argmax(-1).tolist()


def test_penalties_match_numpy_reference():
    logits = logits_for(3)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, VOCAB, 20).tolist() for _ in range(3)]
    outputs = [rng.integers(0, 40, 30).tolist() for _ in range(3)]
    settings = [(1.5, 0.0, 0.0), (1.0, 0.7, 0.3), (0.8, -0.5, 1.2)]
    params = [
        SamplingParams(repetition_penalty=r, presence_penalty=p, frequency_penalty=f)
        for r, p, f in settings
    ]
    batch = batch_of(params, prompts=prompts, outputs=outputs)
    got = np.asarray(process_logits(jnp.asarray(logits), jax.device_put(batch)))
    for index, (rep, presence, frequency) in enumerate(settings):
        expected = reference_penalties(
            logits[index], prompts[index], outputs[index], rep, presence, frequency
        )
        np.testing.assert_allclose(got[index], expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(got[3:], logits[3:])


def test_presence_and_frequency_ignore_prompt_tokens():
    logits = logits_for(4)
    params = SamplingParams(presence_penalty=1.0, frequency_penalty=1.0)
    batch = batch_of([params], prompts=[[5, 5, 5]], outputs=[[6]])
    got = np.asarray(process_logits(jnp.asarray(logits), jax.device_put(batch)))
    assert got[0, 5] == logits[0, 5]
    assert got[0, 6] == pytest.approx(logits[0, 6] - 2.0)


def test_logit_bias_is_added_after_penalties():
    logits = logits_for(5)
    params = SamplingParams(repetition_penalty=2.0, logit_bias={7: 10.0, 8: -3.5})
    batch = batch_of([params], outputs=[[7]])
    got = np.asarray(process_logits(jnp.asarray(logits), jax.device_put(batch)))
    expected = logits[0].copy()
    expected[7] = (expected[7] / 2.0 if expected[7] > 0 else expected[7] * 2.0) + 10.0
    expected[8] -= 3.5
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


def test_large_logit_bias_forces_the_token_even_when_sampling():
    logits = logits_for(6)
    params = [SamplingParams(temperature=1.0, logit_bias={42: 100.0})] * BATCH
    assert tokens(logits, batch_of(params)).tolist() == [42] * BATCH


def test_min_tokens_blocks_eos_until_reached():
    logits = np.zeros((BATCH, VOCAB), np.float32)
    logits[:, 0] = 50.0  # EOS dominates
    params = SamplingParams(temperature=0.0, min_tokens=2)
    assert tokens(logits, batch_of([params], outputs=[[1]], eos=[0]))[0] != 0
    assert tokens(logits, batch_of([params], outputs=[[1, 1]], eos=[0]))[0] == 0


def reference_kept(logits, top_k, top_p):
    """vLLM's semantics: top-k, then the smallest head of mass >= top_p (no ties here)."""
    kept = np.ones_like(logits, dtype=bool)
    for b, row in enumerate(logits):
        order = np.argsort(-row)
        if 0 < top_k[b] < len(row):
            kept[b, order[top_k[b] :]] = False
        probs = np.exp(row - row.max()) * kept[b]
        probs = probs[order] / probs.sum()
        exclusive = np.cumsum(probs) - probs
        kept[b, order[exclusive >= top_p[b]]] = False
    return kept


@pytest.mark.parametrize(
    ("top_k", "top_p"),
    [
        ([1, 5, 64, 0, 100, 299, 300, -1], [1.0] * 8),
        ([0] * 8, [0.05, 0.3, 0.5, 0.9, 0.99, 0.999, 0.7, 1.0]),
        ([3, 50, 100, 0, 10, 200, 1, 0], [0.5, 0.9, 0.95, 0.2, 0.99, 0.6, 0.9, 0.8]),
    ],
)
def test_top_k_and_top_p_keep_exactly_the_reference_support(top_k, top_p):
    logits = logits_for(7, scale=2.0)
    k = np.maximum(np.asarray(top_k, np.int32), 0)
    p = np.asarray(top_p, np.float32)
    got = np.asarray(apply_top_k_top_p(jnp.asarray(logits), jnp.asarray(k), jnp.asarray(p)))
    np.testing.assert_array_equal(np.isfinite(got), reference_kept(logits, k, p))


def test_min_p_drops_tokens_below_fraction_of_max_probability():
    logits = logits_for(8)
    min_p = np.asarray([0.0, 0.01, 0.1, 0.5, 1.0, 0.2, 0.3, 0.05], np.float32)
    got = np.asarray(apply_min_p(jnp.asarray(logits), jnp.asarray(min_p)))
    relative_probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_array_equal(np.isfinite(got), relative_probs >= min_p[:, None])


def support_of(params, logits_row, draws=512):
    """Tokens drawn by ``draws`` rows with the same logits and distinct seeds."""
    logits = np.broadcast_to(logits_row, (draws, VOCAB))
    rows = [SamplingRow(params, seed, [], []) for seed in range(draws)]
    batch = SamplingBatch.from_requests(rows, draws)
    return np.asarray(sample(jnp.asarray(logits), batch).token_ids)


@pytest.mark.parametrize(
    ("params", "top_k", "top_p"),
    [
        (SamplingParams(temperature=1.0, top_k=5), 5, 1.0),
        (SamplingParams(temperature=1.0, top_p=0.6), 0, 0.6),
        (SamplingParams(temperature=2.0, top_k=100, top_p=0.9), 100, 0.9),
    ],
)
def test_samples_stay_inside_the_truncated_support(params, top_k, top_p):
    logits_row = logits_for(9, rows=1, scale=1.0)[0] / params.temperature
    allowed = reference_kept(logits_row[None], np.asarray([top_k]), np.asarray([top_p]))[0]
    drawn = support_of(params, logits_for(9, rows=1, scale=1.0)[0])
    assert allowed[drawn].all()
    assert len(set(drawn.tolist())) > 1


def test_min_p_samples_stay_above_threshold():
    logits_row = logits_for(10, rows=1)[0]
    drawn = support_of(SamplingParams(temperature=1.0, min_p=0.2), logits_row)
    probs = np.exp(logits_row - logits_row.max())
    assert (probs[drawn] >= 0.2 - 1e-6).all()


def test_sample_frequencies_follow_the_softmax():
    logits_row = np.full(VOCAB, -np.inf, np.float32)
    logits_row[:4] = np.log([0.1, 0.2, 0.3, 0.4])
    logits_row = np.where(np.isfinite(logits_row), logits_row, -1e9).astype(np.float32)
    drawn = support_of(SamplingParams(temperature=1.0), logits_row)
    freq = np.bincount(drawn, minlength=VOCAB)[:4] / len(drawn)
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.07)
    assert drawn.max() < 4


def test_seeded_row_is_independent_of_neighbours_and_position():
    logits = logits_for(11)
    target = SamplingParams(temperature=1.0, top_p=0.95, seed=1234)
    alone = batch_of([target], seeds=[1234], outputs=[[1, 2, 3]], size=BATCH)
    alone_token = tokens(logits[[5] * BATCH], alone)[0]
    others = [SamplingParams(temperature=t) for t in (0.0, 0.5, 2.0)]
    crowd = batch_of(
        [others[0], others[1], others[2], target] + [others[1]] * 4,
        seeds=[7, 8, 9, 1234, 1, 2, 3, 4],
        outputs=[[], [4], [5, 6], [1, 2, 3], [], [], [], []],
    )
    crowd_logits = logits.copy()
    crowd_logits[3] = logits[5]
    assert tokens(crowd_logits, crowd)[3] == alone_token
    wider = batch_of([target] * 16, seeds=[1234] * 16, outputs=[[1, 2, 3]] * 16, size=16)
    assert set(tokens(np.repeat(logits[5:6], 16, 0), wider).tolist()) == {alone_token}


def test_same_seed_different_step_and_different_seeds_differ():
    logits_row = np.zeros(VOCAB, np.float32)  # uniform: draws differ with high probability
    params = SamplingParams(temperature=1.0)
    by_seed = [
        tokens(
            np.tile(logits_row, (BATCH, 1)),
            batch_of([params] * BATCH, seeds=list(range(s, s + BATCH))),
        )
        for s in (0, 100)
    ]
    assert by_seed[0].tolist() != by_seed[1].tolist()
    steps = batch_of([params] * BATCH, seeds=[5] * BATCH, outputs=[[0] * i for i in range(BATCH)])
    assert len(set(tokens(np.tile(logits_row, (BATCH, 1)), steps).tolist())) > 1


def test_same_seed_and_step_repeat_exactly():
    logits = logits_for(12)
    batch = batch_of([SamplingParams(temperature=1.5)] * BATCH, seeds=list(range(BATCH)))
    assert tokens(logits, batch).tolist() == tokens(logits, batch).tolist()


def test_logprobs_are_raw_log_softmax_values():
    logits = logits_for(13)
    params = [SamplingParams(temperature=0.7, logprobs=4, repetition_penalty=1.5)] * BATCH
    batch = batch_of(params, outputs=[[1, 2]] * BATCH)
    out = sample(jnp.asarray(logits), batch)
    assert batch.num_logprobs == 5
    reference = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token_ids = np.asarray(out.token_ids)
    np.testing.assert_allclose(
        np.asarray(out.logprobs), reference[np.arange(BATCH), token_ids], rtol=1e-5, atol=1e-5
    )
    top = np.argsort(-reference, axis=-1)[:, :5]
    np.testing.assert_array_equal(np.asarray(out.top_token_ids), top)
    np.testing.assert_allclose(
        np.asarray(out.top_logprobs), np.take_along_axis(reference, top, 1), rtol=1e-5, atol=1e-5
    )
    ranks = (reference > reference[np.arange(BATCH), token_ids][:, None]).sum(-1) + 1
    np.testing.assert_array_equal(np.asarray(out.ranks), ranks)


def test_logprobs_are_omitted_when_no_row_asks():
    out = sample(jnp.asarray(logits_for(14)), batch_of([SamplingParams()]))
    assert out.logprobs is None and out.top_token_ids is None
