"""Concurrent clients with different keys: each gets only its own answers, and per-key
usage adds up to what the clients were told and to the server's totals."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest
from esurge_server_openai import eSurgeApiServer
from esurge_server_openai.options import ServerOptions

from tests.reliability.conftest import assert_back_to_baseline
from tests.reliability.conftest import serve as serve_api

pytestmark = pytest.mark.slow

CLIENTS = 6


def messages_of(index: int) -> list[dict]:
    # prompts of different lengths, so a swapped answer shows in its prompt_tokens
    return [{"role": "user", "content": "Say hi. " + "Please. " * index}]


def test_concurrent_keys_get_their_own_answers_and_usage_adds_up(engine, baseline_pages):
    keys = {f"churn-key-{i}": {"label": f"client-{i}"} for i in range(CLIENTS)}
    api = eSurgeApiServer(engine, require_api_key=True, api_keys=keys, options=ServerOptions())
    with serve_api(api) as uv:
        with httpx.Client(base_url=uv.base_url, timeout=60) as http:
            expected_prompt = {
                i: http.post(
                    "/tokenize",
                    json={"messages": messages_of(i)},
                    headers={"Authorization": f"Bearer churn-key-{i}"},
                ).json()["count"]
                for i in range(CLIENTS)
            }

        def client(index: int) -> list[dict]:
            headers = {"Authorization": f"Bearer churn-key-{index}"}
            usages = []
            with httpx.Client(base_url=uv.base_url, headers=headers, timeout=120) as http:
                for round_ in range(2):
                    body = {
                        "messages": messages_of(index),
                        "max_tokens": 6 + index,
                        "temperature": 0.7,
                        "seed": index,
                        "stream": round_ % 2 == 1,
                        "stream_options": {"include_usage": True},
                    }
                    response = http.post("/v1/chat/completions", json=body)
                    assert response.status_code == 200
                    if body["stream"]:
                        chunks = [
                            json.loads(e)
                            for e in response.text.split("data: ")[1:]
                            if not e.startswith("[DONE]")
                        ]
                        assert len({c["id"] for c in chunks}) == 1
                        usage = chunks[-1]["usage"]
                    else:
                        usage = response.json()["usage"]
                    assert usage["prompt_tokens"] == expected_prompt[index]
                    assert usage["completion_tokens"] <= 6 + index
                    usages.append(usage)
            return usages

        before = api.total_usage()
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))
        after = api.total_usage()
    per_key = api.usage()
    for index, usages in enumerate(results):
        usage = per_key[f"client-{index}"]
        assert usage.requests == len(usages)
        assert usage.prompt_tokens == sum(u["prompt_tokens"] for u in usages)
        assert usage.completion_tokens == sum(u["completion_tokens"] for u in usages)
    assert after.requests - before.requests == sum(u.requests for u in per_key.values())
    assert after.prompt_tokens - before.prompt_tokens == sum(
        u.prompt_tokens for u in per_key.values()
    )
    assert after.completion_tokens - before.completion_tokens == sum(
        u.completion_tokens for u in per_key.values()
    )
    assert_back_to_baseline(engine, baseline_pages)
