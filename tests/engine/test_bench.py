"""``esurge bench throughput`` runs a tiny workload end to end (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from esurge_core.bench.workload import random_token_prompts
from esurge_core.cli import main

pytestmark = pytest.mark.slow


def test_bench_throughput_reports_exact_token_counts(capsys):
    args = ["bench", "throughput", "--num-prompts", "3", "--input-len", "8", "--output-len", "5"]
    assert main([*args, "--kv-cache-memory", str(64 << 20), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_requests"] == 3
    assert result["prompt_tokens"] == 24
    assert result["output_tokens"] == 15
    assert result["compilations"] >= 1
    assert result["output_tokens_per_s"] > 0


def test_random_prompts_are_seeded_and_avoid_special_ids():
    first = random_token_prompts(4, 16, 100, seed=3, special_ids=frozenset({0, 1, 2}))
    assert first == random_token_prompts(4, 16, 100, seed=3, special_ids=frozenset({0, 1, 2}))
    assert first != random_token_prompts(4, 16, 100, seed=4, special_ids=frozenset({0, 1, 2}))
    assert all(len(p) == 16 and not {0, 1, 2} & set(p) for p in first)
