"""Faults: one failing request fails alone (error event then [DONE], or 500), a dead engine
turns /health to 503 and fails in-flight requests, a wedged engine is detected, and the
server stops with exit code 1 when the engine dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from types import SimpleNamespace

import httpx
import pytest
from esurge_server_openai import chat as chat_module
from esurge_server_openai import eSurgeApiServer
from esurge_server_openai.options import ServerOptions
from fastapi.testclient import TestClient

from esurge_core.engine.esurge import EngineDeadError
from esurge_core.engine.outputs import CompletionOutput, RequestOutput
from tests.reliability.conftest import (
    AUTH,
    MESSAGES,
    assert_back_to_baseline,
    error_of,
    long_chat,
    make_api,
    sse_events,
)
from tests.reliability.conftest import serve as serve_api

BODY = {"messages": MESSAGES, "max_tokens": 4}


@pytest.fixture
def faulty_chat(monkeypatch):
    """Requests whose ``user`` is ``"boom"`` fail while their answer is being built."""
    real = chat_module._tools_enabled

    def tools_enabled(body):
        if body.user == "boom":
            raise RuntimeError("injected fault")
        return real(body)

    monkeypatch.setattr(chat_module, "_tools_enabled", tools_enabled)


@pytest.fixture(scope="module")
def url(engine):
    with serve_api(make_api(engine, max_tokens_cap=64)) as uv:
        yield uv.base_url


def test_a_fault_in_a_stream_sends_an_error_event_then_done(
    url, engine, baseline_pages, faulty_chat
):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        body = {**long_chat(40, stream=True), "user": "boom"}
        events = sse_events(http.post("/v1/chat/completions", json=body).text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "RuntimeError" in error["message"]
    assert "injected fault" not in error["message"]  # no internals leak
    assert_back_to_baseline(engine, baseline_pages)


def test_a_fault_in_a_non_streamed_answer_is_a_500_and_others_are_served(
    url, engine, baseline_pages, faulty_chat
):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        failed = http.post("/v1/chat/completions", json={**BODY, "user": "boom"})
        served = http.post("/v1/chat/completions", json=BODY)
    assert failed.status_code == 500
    assert error_of(failed)["type"] == "server_error"
    assert served.status_code == 200
    assert_back_to_baseline(engine, baseline_pages)


class FakeEngine:
    """Just enough engine for the server: each request yields one token, then ``fail``."""

    model_name = "fake"
    max_model_len = 64
    model = SimpleNamespace(vocab_size=100)
    tokenizer = SimpleNamespace(
        chat_template="fake",
        added_tokens_decoder={},
        apply_chat_template=lambda messages, **_: "rendered",
        encode=lambda text, **_: [1, 2, 3],
        decode=lambda ids, **_: "x",
    )

    def __init__(self):
        self.is_alive = True
        self.num_steps = 0
        self.last_step_time = time.monotonic()
        self.busy = False
        self.scheduler = SimpleNamespace(max_num_seqs=4, running=[])
        self.release = asyncio.Event

    def tracked_request_ids(self):
        return []

    def has_unfinished_requests(self):
        return self.busy

    def abort(self, request_id):
        pass

    async def async_stream(self, prompt, params, **kwargs):
        choice = CompletionOutput(0, "x", [7], delta_text="x", finish_reason=None)
        yield RequestOutput("r", None, [1, 2, 3], [choice], finished=False)
        while self.is_alive:
            await asyncio.sleep(0.01)
        raise EngineDeadError("the engine loop failed: RuntimeError('device lost')")


def test_health_is_503_when_the_engine_is_dead():
    engine = FakeEngine()
    client = TestClient(eSurgeApiServer(engine).app)
    assert client.get("/health").json()["status"] == "ok"
    engine.is_alive = False
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["status"] == "dead"


def test_in_flight_requests_fail_promptly_when_the_engine_dies():
    engine = FakeEngine()
    api = eSurgeApiServer(engine)
    with serve_api(api) as uv, httpx.Client(base_url=uv.base_url, timeout=30) as http:
        with http.stream(
            "POST", "/v1/chat/completions", json={**BODY, "stream": True}
        ) as stream_response:
            lines = stream_response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert "chat.completion.chunk" in first
            engine.is_alive = False
            rest = [line[6:] for line in lines if line.startswith("data: ")]
        assert rest[-1] == "[DONE]"
        assert json.loads(rest[-2])["error"]["type"] == "server_error"
        # The server stops within a tick (0.1 s) of the engine dying, so a new request may meet
        # either the 503 or a closed port; both tell the client to go elsewhere.
        with contextlib.suppress(httpx.ConnectError):
            assert http.post("/v1/chat/completions", json=BODY).status_code == 503
        uv.thread.join(timeout=10)
        assert not uv.thread.is_alive()
        assert uv.exit_code == 1
    # Deterministically, while the app is still reachable, a dead engine answers 503.
    assert TestClient(api.app).post("/v1/chat/completions", json=BODY).status_code == 503


def test_non_streamed_request_gets_503_when_the_engine_dies():
    engine = FakeEngine()
    api = eSurgeApiServer(engine, options=ServerOptions())
    client = TestClient(api.app)

    async def kill_soon():
        await asyncio.sleep(0.2)
        engine.is_alive = False

    async def run():
        task = asyncio.ensure_future(kill_soon())
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post("/v1/chat/completions", json=BODY)
        await task
        return response

    response = asyncio.run(run())
    assert response.status_code == 503
    assert error_of(response)["type"] == "server_error"
    assert client.get("/health").status_code == 503


def test_a_wedged_engine_turns_health_to_503():
    engine = FakeEngine()
    api = eSurgeApiServer(engine, options=ServerOptions(wedge_threshold_s=0.2))
    client = TestClient(api.app)
    engine.busy = True
    engine.last_step_time = time.monotonic()
    api.watchdog.sample()
    assert client.get("/health").status_code == 200
    time.sleep(0.3)
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["status"] == "wedged"
    engine.last_step_time = time.monotonic()  # it stepped again
    assert client.get("/health").status_code == 200


def test_an_engine_waking_from_idle_is_not_wedged():
    engine = FakeEngine()
    api = eSurgeApiServer(engine, options=ServerOptions(wedge_threshold_s=0.2))
    engine.last_step_time = time.monotonic() - 3600  # idle for an hour
    api.watchdog.sample()  # seen idle now
    engine.busy = True  # a request just arrived
    assert api.health().status == "ok"
