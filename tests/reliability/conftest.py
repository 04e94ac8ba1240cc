"""Reliability suite: the shared engine, servers with chosen limits on free ports, and the
check that after every test the engine is back at its baseline (no page or request leaked).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import _SHARED, shared_engine

KEY = "reliability-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [{"role": "user", "content": "Count from one to five."}]


@pytest.fixture(scope="session")
def engine():
    engine = shared_engine()
    yield engine
    if _SHARED.pop("engine", None) is not None:
        engine.close()


@pytest.fixture(scope="session")
def baseline_pages(engine) -> int:
    """Pages in use with nothing running (the prefix cache keeps freed pages free)."""
    wait_idle(engine)
    return engine.kv_cache.stats().num_used_pages


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_idle(engine: Any, timeout: float = 30.0) -> None:
    """Wait until the engine has no queued or running request."""
    deadline = time.monotonic() + timeout
    while engine.has_unfinished_requests():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"engine still busy after {timeout} s: {len(engine.scheduler.waiting)} waiting, "
                f"{len(engine.scheduler.running)} running"
            )
        time.sleep(0.02)


def assert_back_to_baseline(engine: Any, baseline_pages: int, timeout: float = 30.0) -> None:
    """No request queued or running, and pages in use back at the baseline."""
    wait_idle(engine, timeout)
    assert not engine.scheduler.waiting and not engine.scheduler.running
    assert engine.kv_cache.stats().num_used_pages == baseline_pages


@contextlib.contextmanager
def serve(api: Any, **config: Any) -> Iterator[Any]:
    """Run ``api`` (an ``eSurgeApiServer``) under its ``GracefulServer`` in a thread.

    Yields the uvicorn server, with ``base_url`` set.
    """
    port = free_port()
    config.setdefault("log_level", "error")
    uv = api.uvicorn_server(host="127.0.0.1", port=port, **config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    uv.base_url = f"http://127.0.0.1:{port}"
    uv.thread = thread
    try:
        yield uv
    finally:
        uv.should_exit = True
        thread.join(timeout=15)


def make_api(engine: Any, **options: Any) -> Any:
    """An ``eSurgeApiServer`` over ``engine`` requiring ``KEY``, with ``options``."""
    from esurge_server_openai import eSurgeApiServer
    from esurge_server_openai.options import ServerOptions

    return eSurgeApiServer(
        engine,
        require_api_key=True,
        api_keys={KEY: {"label": "reliability"}},
        options=ServerOptions(**options),
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object of ``response`` (checked for shape, no traceback)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body."""
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def long_chat(max_tokens: int = 200, stream: bool = False, content: str = "Tell a story.") -> dict:
    """A chat body that keeps generating for ``max_tokens`` tokens."""
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": stream,
    }


class EngineSpy:
    """Records what the engine is asked and does: requests added, aborts, and which
    requests each executed step carried (``steps``: one set of request ids per step)."""

    def __init__(self, engine: Any, monkeypatch: Any):
        self.added: list[str] = []
        self.aborts: list[tuple[str, int]] = []
        self.steps: list[set[str]] = []
        add, abort, dispatch = engine.add_request, engine.abort, engine.runner.dispatch

        def spy_add(*args: Any, **kwargs: Any) -> str:
            request_id = add(*args, **kwargs)
            self.added.append(request_id)
            return request_id

        def spy_abort(request_id: str) -> None:
            self.aborts.append((request_id, len(self.steps)))
            abort(request_id)

        def spy_dispatch(chunks: Any, previous: Any = None) -> Any:
            self.steps.append({chunk.request.parent_id for chunk in chunks})
            return dispatch(chunks, previous)

        monkeypatch.setattr(engine, "add_request", spy_add)
        monkeypatch.setattr(engine, "abort", spy_abort)
        monkeypatch.setattr(engine.runner, "dispatch", spy_dispatch)

    def steps_after_abort(self, request_id: str) -> int:
        """Executed steps that still carried ``request_id`` after its first abort."""
        first = next(step for rid, step in self.aborts if rid == request_id)
        return sum(request_id in ids for ids in self.steps[first:])

    def ever_ran(self, request_id: str) -> bool:
        """Whether any executed step carried ``request_id``."""
        return any(request_id in ids for ids in self.steps)


@pytest.fixture
def spy(engine, monkeypatch) -> EngineSpy:
    """An ``EngineSpy`` on the shared engine for one test."""
    wait_idle(engine)
    return EngineSpy(engine, monkeypatch)
