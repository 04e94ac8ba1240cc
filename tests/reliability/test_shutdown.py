"""Shutdown: the first SIGTERM stops admitting (503), drains in-flight requests up to
``drain_timeout_s``, aborts the rest with ``finish_reason: "abort"``, and exits 0."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import (
    AUTH,
    assert_back_to_baseline,
    free_port,
    long_chat,
    make_api,
)
from tests.reliability.conftest import serve as serve_api

pytestmark = pytest.mark.slow


def stream_events(url: str, body: dict, started: concurrent.futures.Future) -> list[str]:
    """POST a streaming ``body``; set ``started`` at the first event; return all events."""
    events = []
    with (
        httpx.Client(base_url=url, headers=AUTH, timeout=120) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if not started.done():
                    started.set_result(True)
    return events


def test_sigterm_drains_in_flight_streams_and_refuses_new_work(engine, baseline_pages):
    api = make_api(engine, drain_timeout_s=60)
    with serve_api(api) as uv, concurrent.futures.ThreadPoolExecutor(1) as pool:
        started: concurrent.futures.Future = concurrent.futures.Future()
        events = pool.submit(stream_events, uv.base_url, long_chat(48, stream=True), started)
        started.result(timeout=60)
        uv.handle_exit(signal.SIGTERM, None)
        with httpx.Client(base_url=uv.base_url, headers=AUTH, timeout=30) as http:
            refused = http.post("/v1/chat/completions", json=long_chat(2))
            health = http.get("/health")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "server_shutting_down"
        assert "retry-after" in refused.headers
        assert health.status_code == 503 and health.json()["status"] == "draining"
        chunks = [json.loads(e) for e in events.result(timeout=120)[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        uv.thread.join(timeout=30)
        assert not uv.thread.is_alive() and uv.exit_code == 0
    assert_back_to_baseline(engine, baseline_pages)


def test_requests_outliving_the_drain_timeout_end_with_finish_reason_abort(engine, baseline_pages):
    api = make_api(engine, drain_timeout_s=0.5)
    with serve_api(api) as uv, concurrent.futures.ThreadPoolExecutor(2) as pool:
        started: concurrent.futures.Future = concurrent.futures.Future()
        streamed = pool.submit(stream_events, uv.base_url, long_chat(400, stream=True), started)

        def whole() -> httpx.Response:
            with httpx.Client(base_url=uv.base_url, headers=AUTH, timeout=120) as http:
                return http.post("/v1/chat/completions", json=long_chat(400))

        answered = pool.submit(whole)
        started.result(timeout=60)
        while api.admission.in_flight < 2:
            time.sleep(0.01)
        uv.handle_exit(signal.SIGTERM, None)
        events = streamed.result(timeout=60)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "abort"
        response = answered.result(timeout=60)
        assert response.status_code == 200
        assert response.json()["choices"][0]["finish_reason"] == "abort"
        uv.thread.join(timeout=30)
        assert uv.exit_code == 0
    assert_back_to_baseline(engine, baseline_pages)


def test_esurge_serve_exits_0_after_sigterm_mid_stream(tmp_path: Path):
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from esurge_core.cli import main; sys.exit(main(sys.argv[1:]))",
        "serve",
        "--port",
        str(port),
        "--max-model-len",
        "256",
        "--kv-cache-memory",
        "67108864",
        "--drain-timeout-s",
        "1",
        "--log-level",
        "warning",
    ]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "esurge serve did not start"
            time.sleep(0.2)
        events = []
        body = long_chat(200, stream=True)
        with (
            httpx.Client(base_url=url, timeout=120) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 2:
                        process.send_signal(signal.SIGTERM)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "abort"
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
