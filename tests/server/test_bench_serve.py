"""``esurge bench serve`` against the real server: every request completes, counts are exact."""

from __future__ import annotations

import asyncio

import pytest

from esurge_core.bench.serve import run_serve_benchmark
from esurge_core.bench.workload import random_token_prompts

from .conftest import API_KEY

pytestmark = pytest.mark.slow


def test_bench_serve_streams_every_request_and_counts_tokens(api_server, model):
    prompts = random_token_prompts(6, 12, 49152, seed=0, special_ids=frozenset(range(17)))
    result = asyncio.run(
        run_serve_benchmark(
            api_server.base_url,
            model,
            prompts,
            output_len=6,
            max_concurrency=3,
            api_key=API_KEY,
            slo_ttft_ms=60_000,
            slo_tpot_ms=60_000,
        )
    )
    assert (result.completed, result.failed) == (6, 0)
    assert result.output_tokens == 36
    assert result.goodput == pytest.approx(result.request_throughput)
    assert 0 < result.ttft_ms["p50"] <= result.e2e_ms["p99"]
    assert result.itl_ms["mean"] > 0


def test_bench_serve_reports_failures_instead_of_raising(api_server, model):
    result = asyncio.run(
        run_serve_benchmark(api_server.base_url, model, [[1, 2, 3]], output_len=4, api_key="wrong")
    )
    assert (result.completed, result.failed) == (0, 1)
