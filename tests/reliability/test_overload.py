"""Overload: a bounded queue refuses at once with Retry-After, a request timeout aborts and
frees, and /health keeps answering while the engine is saturated."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest

from tests.reliability.conftest import (
    AUTH,
    assert_back_to_baseline,
    error_of,
    long_chat,
    make_api,
    sse_events,
)
from tests.reliability.conftest import serve as serve_api

pytestmark = pytest.mark.slow


def test_requests_beyond_the_queue_bound_get_429_with_retry_after_at_once(engine, baseline_pages):
    # the engine runs 8 sequences; 2 may wait; of 14 long requests at least 4 are refused
    api = make_api(engine, max_queued_requests=2)
    with serve_api(api) as uv:

        def one(index: int) -> tuple[int, float, dict]:
            with httpx.Client(base_url=uv.base_url, headers=AUTH, timeout=120) as http:
                start = time.monotonic()
                response = http.post(
                    "/v1/chat/completions", json=long_chat(24, content=f"Story {index}.")
                )
                return response.status_code, time.monotonic() - start, dict(response.headers)

        with concurrent.futures.ThreadPoolExecutor(14) as pool:
            results = list(pool.map(one, range(14)))
        refused = [r for r in results if r[0] == 429]
        served = [r for r in results if r[0] == 200]
        assert len(refused) + len(served) == 14
        assert len(refused) >= 4
        assert all(int(headers["retry-after"]) >= 1 for _, _, headers in refused)
        assert max(elapsed for _, elapsed, _ in refused) < min(e for _, e, _ in served)
        assert api.admission.in_flight == 0
    assert_back_to_baseline(engine, baseline_pages)


def test_health_answers_while_the_engine_is_saturated(engine, baseline_pages):
    api = make_api(engine)
    with serve_api(api) as uv:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:

            def one(index: int) -> int:
                with httpx.Client(base_url=uv.base_url, headers=AUTH, timeout=120) as http:
                    body = long_chat(16, content=f"Tale {index}.")
                    return http.post("/v1/chat/completions", json=body).status_code

            futures = [pool.submit(one, index) for index in range(10)]
            latencies = []
            with httpx.Client(base_url=uv.base_url, timeout=5) as http:
                while not engine.has_unfinished_requests():
                    time.sleep(0.01)
                while not all(f.done() for f in futures):
                    start = time.monotonic()
                    assert http.get("/health").status_code == 200
                    latencies.append(time.monotonic() - start)
                    time.sleep(0.02)
            assert [f.result() for f in futures] == [200] * 10
        latencies.sort()
        print(f"/health p99 under saturation: {latencies[int(0.99 * (len(latencies) - 1))]:.4f} s")
        assert latencies
    assert_back_to_baseline(engine, baseline_pages)


def test_a_non_streamed_request_past_its_timeout_is_aborted_with_504(engine, baseline_pages):
    api = make_api(engine, request_timeout_s=1.0)
    with serve_api(api) as uv, httpx.Client(base_url=uv.base_url, headers=AUTH, timeout=60) as http:
        response = http.post("/v1/chat/completions", json=long_chat(400))
        assert response.status_code == 504
        assert error_of(response)["code"] == "request_timeout"
        assert_back_to_baseline(engine, baseline_pages)
        assert http.post("/v1/chat/completions", json=long_chat(2)).status_code == 200


def test_a_stream_past_its_timeout_ends_with_an_error_event_and_done(engine, baseline_pages):
    api = make_api(engine, request_timeout_s=1.0)
    with serve_api(api) as uv, httpx.Client(base_url=uv.base_url, headers=AUTH, timeout=60) as http:
        response = http.post("/v1/chat/completions", json=long_chat(400, stream=True))
        events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "request_timeout"
    assert_back_to_baseline(engine, baseline_pages)
