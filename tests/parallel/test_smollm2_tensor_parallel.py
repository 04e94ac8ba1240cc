"""SmolLM2-135M (9 query heads, 3 KV heads) split over 3 devices keeps its greedy tokens."""

from __future__ import annotations

import pytest

from tests.parallel.subprocess_jax import run_worker


@pytest.mark.slow
def test_smollm2_greedy_tokens_are_the_same_at_tensor_sizes_1_and_3():
    result = run_worker("smollm2", {"steps": 8, "tensor_sizes": [1, 3]}, device_count=3)
    assert result["tp3_kv_heads_sharded"] is True  # 3 KV heads, one per device
    assert result["tp1"] == result["reference"]
    assert result["tp3"] == result["reference"]
