"""A client that leaves (mid-stream, mid-answer, or while queued) gets its engine request
aborted within one engine step, never scheduled if it was still waiting; a slow reader
holds up nobody else."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.conftest import AUTH, assert_back_to_baseline, long_chat, make_api
from tests.reliability.conftest import serve as serve_api

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url(engine):
    with serve_api(make_api(engine)) as uv:
        yield uv.base_url


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_leaving_mid_stream_aborts_within_one_step(url, engine, spy, baseline_pages):
    body = long_chat(300, stream=True)
    with (
        httpx.Client(base_url=url, headers=AUTH, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: ")
            if received == 3:
                break
    (request_id,) = spy.added
    wait_for(lambda: any(rid == request_id for rid, _ in spy.aborts))
    assert_back_to_baseline(engine, baseline_pages)
    assert spy.steps_after_abort(request_id) <= 1
    assert sum(request_id in ids for ids in spy.steps) < 300


def test_leaving_mid_answer_aborts_within_one_step(url, engine, spy, baseline_pages):
    with post_on_a_raw_socket(url, long_chat(400)):
        wait_for(lambda: len(spy.added) == 1 and spy.ever_ran(spy.added[0]))
    (request_id,) = spy.added
    wait_for(lambda: any(rid == request_id for rid, _ in spy.aborts))
    assert_back_to_baseline(engine, baseline_pages)
    assert spy.steps_after_abort(request_id) <= 1
    assert sum(request_id in ids for ids in spy.steps) < 400


def test_leaving_while_queued_is_never_scheduled(url, engine, spy, baseline_pages):
    slots = engine.scheduler.max_num_seqs
    stop = threading.Event()

    def hold(index: int) -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
            body = long_chat(200, stream=True, content=f"Hold {index}.")
            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                for _ in response.iter_lines():
                    if stop.is_set():
                        return

    with concurrent.futures.ThreadPoolExecutor(slots) as pool:
        holders = [pool.submit(hold, index) for index in range(slots)]
        wait_for(lambda: len(engine.scheduler.running) == slots)
        with post_on_a_raw_socket(url, long_chat(8, content="Queued.")):
            # Leave only once the server has queued the request (a slow machine may take
            # longer than any fixed client timeout to get there).
            wait_for(lambda: len(spy.added) > slots)
        queued_id = spy.added[slots]
        wait_for(lambda: any(rid == queued_id for rid, _ in spy.aborts))
        assert_waiting_is_empty_of(engine, queued_id)
        stop.set()
        for holder in holders:
            holder.result()
    assert_back_to_baseline(engine, baseline_pages)
    assert not spy.ever_ran(queued_id)


@contextlib.contextmanager
def post_on_a_raw_socket(url: str, body: dict) -> Iterator[None]:
    """POST ``body`` to the chat endpoint and keep the connection open until the block ends,
    then close it without reading the answer: a client that leaves."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {AUTH['Authorization']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head + payload)
        yield


def assert_waiting_is_empty_of(engine, request_id: str) -> None:
    wait_for(lambda: all(r.parent_id != request_id for r in engine.scheduler.waiting))


def test_a_slow_reader_does_not_stall_other_streams(url, engine, baseline_pages):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as slow_client:
        body = long_chat(200, stream=True, content="Slow.")
        with slow_client.stream("POST", "/v1/chat/completions", json=body) as slow:
            assert slow.status_code == 200  # headers read, body left unread
            with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
                for index in range(3):
                    fast = http.post(
                        "/v1/chat/completions", json=long_chat(8, stream=True, content=f"F{index}")
                    )
                    assert fast.status_code == 200 and fast.text.endswith("data: [DONE]\n\n")
    assert_back_to_baseline(engine, baseline_pages)
