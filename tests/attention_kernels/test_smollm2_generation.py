"""A short SmolLM2 generation through each other kernel (Pallas in interpret mode, the native
CPU kernel) matches ``xla``.

``ESURGE_PLATFORM`` fakes the kernel's platform so the capability check passes; the backend
interprets because JAX's real backend here is the CPU.
"""

from __future__ import annotations

import pytest

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
MAX_TOKENS = 4


def _greedy_tokens(monkeypatch, attention: str, platform: str) -> list[list[int]]:
    from esurge_core import SamplingParams, eSurge

    monkeypatch.setenv("ESURGE_PLATFORM", platform)
    engine = eSurge(
        "smollm2-135m-instruct",
        attention=attention,
        max_model_len=128,
        max_num_seqs=2,
        page_size=16,
        kv_cache_memory=64 << 20,
        min_input_pad=16,  # the prefill and the decodes share one compiled step
    )
    try:
        assert engine.attention_backend_name == attention
        outputs = engine.generate(
            PROMPTS, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
        )
    finally:
        engine.close()
    return [list(output.outputs[0].token_ids) for output in outputs]


@pytest.fixture(scope="module")
def xla_tokens():
    monkeypatch = pytest.MonkeyPatch()
    try:
        return _greedy_tokens(monkeypatch, "xla", "cpu")
    finally:
        monkeypatch.undo()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("attention", "platform"), [("pallas", "tpu"), ("triton", "gpu"), ("cpu", "cpu")]
)
def test_greedy_tokens_match_the_xla_backend(monkeypatch, xla_tokens, attention, platform):
    tokens = _greedy_tokens(monkeypatch, attention, platform)
    assert all(len(t) == MAX_TOKENS for t in xla_tokens)
    assert tokens == xla_tokens
