"""The eSurge models give Hugging Face's logits over a paged, ragged, jitted step.

Every architecture variant (hf_reference.CASES) is saved with save_pretrained, loaded by
our folder loader and run by PagedBatchRunner with 4-token pages, so prompts cross pages,
sliding windows (8) and Llama 4 chunks (8), and released pages are replaced by the null
page. The reference is one cache-free HF forward over the whole sequence.

Error measure: max |ours - HF| / max |HF| over the compared logits.
float32: < 1e-4. bfloat16 (params and activations bf16; norms, softmax, logits fp32)
against the float32 reference: < 5e-2 (about ten bf16 roundings of 2^-8 through 2-4
layers; measured 1.4-2.7%).
"""

from __future__ import annotations

import jax
import numpy as np

from esurge_core.models.fused_projections import fuse_projections, held_weight_paths
from tests.models.hf_reference import VOCAB, hf_logits
from tests.models.paged_batch import PagedBatchRunner

FP32_TOLERANCE = 1e-4
BF16_TOLERANCE = 5e-2

_rng = np.random.default_rng(1234)
PROMPT = [int(t) for t in _rng.integers(0, VOCAB, 13)]  # 13 tokens: 4 pages, past a window
DECODED = [int(t) for t in _rng.integers(0, VOCAB, 8)]  # 8 decode steps, to position 20
OTHER = [int(t) for t in _rng.integers(0, VOCAB, 14)]


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|."""
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


def prefill_and_decode(runner: PagedBatchRunner) -> np.ndarray:
    """Prefill PROMPT then decode DECODED one token per step; all logits in order."""
    rows = [runner.step({"a": PROMPT})["a"]]
    rows += [runner.step({"a": [token]})["a"] for token in DECODED]
    return np.concatenate(rows)


def test_float32_prefill_and_decode_match_hf(hf_case):
    model, params = hf_case.load("float32")
    ours = prefill_and_decode(PagedBatchRunner(model, params))
    reference = hf_logits(hf_case.hf_model, PROMPT + DECODED)
    assert relative_error(ours, reference) < FP32_TOLERANCE


def test_float32_mixed_ragged_batch_matches_each_sequence_alone(hf_case):
    model, params = hf_case.load("float32")
    runner = PagedBatchRunner(model, params)
    a, b = PROMPT + DECODED, OTHER + DECODED[:3]
    got: dict[str, list[np.ndarray]] = {"a": [], "b": []}

    def step(work):
        for name, logits in runner.step(work).items():
            got[name].append(logits)

    step({"a": a[:10]})  # a prefills alone
    step({"a": a[10:11], "b": b[:7]})  # a decodes while b prefills its first chunk
    step({"b": b[7:14], "a": a[11:12]})  # b finishes its prompt (chunked prefill), a decodes
    for i in range(3):  # both decode
        step({"a": a[12 + i : 13 + i], "b": b[14 + i : 15 + i]})

    for name, tokens in (("a", a[:15]), ("b", b)):
        ours = np.concatenate(got[name])
        assert relative_error(ours, hf_logits(hf_case.hf_model, tokens)) < FP32_TOLERANCE


def test_bfloat16_prefill_and_decode_stay_close_to_hf(hf_case):
    model, params = hf_case.load("bfloat16")
    ours = prefill_and_decode(PagedBatchRunner(model, params))
    reference = hf_logits(hf_case.hf_model, PROMPT + DECODED)
    assert relative_error(ours, reference) < BF16_TOLERANCE


def test_bfloat16_weights_with_float32_activations_stay_close_to_hf(hf_case):
    model, params = hf_case.load("float32", param_dtype="bfloat16")
    assert {leaf.dtype.name for leaf in jax.tree.leaves(params)} == {"bfloat16"}
    ours = prefill_and_decode(PagedBatchRunner(model, params))
    reference = hf_logits(hf_case.hf_model, PROMPT + DECODED)
    assert relative_error(ours, reference) < BF16_TOLERANCE


def test_fused_projections_match_hf_and_the_separate_ones(hf_case):
    model, params = hf_case.load("float32")
    separate = prefill_and_decode(PagedBatchRunner(model, params))
    model, params = hf_case.load("float32")
    fuse_projections(params, model.matmul_weight_paths())
    weight_paths = held_weight_paths(params, model.matmul_weight_paths())
    fused_names = {path[-1] for path in weight_paths} & {"qkv", "gate_up"}
    assert fused_names == {"qkv", "gate_up"}
    assert not {path[-1] for path in weight_paths} & {"q", "k", "v", "gate", "up"}
    ours = prefill_and_decode(PagedBatchRunner(model, params))
    reference = hf_logits(hf_case.hf_model, PROMPT + DECODED)
    assert relative_error(ours, reference) < FP32_TOLERANCE
    np.testing.assert_allclose(ours, separate, rtol=0, atol=1e-5 * np.abs(separate).max())
