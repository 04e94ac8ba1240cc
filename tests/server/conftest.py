"""One engine and one real uvicorn server (random free port) for the whole server suite."""

from __future__ import annotations

import socket
import threading
import time

import pytest

API_KEY = "test-key-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_SHARED: dict[str, object] = {}


def shared_engine():
    """The one engine of the server and reliability suites (built on first use)."""
    if "engine" not in _SHARED:
        from esurge_core.engine.esurge import eSurge

        _SHARED["engine"] = eSurge(
            "smollm2-135m-instruct",
            max_model_len=512,
            max_num_seqs=8,
            page_size=16,
            kv_cache_memory=256 << 20,
        )
    return _SHARED["engine"]


@pytest.fixture(scope="session")
def engine():
    engine = shared_engine()
    yield engine
    if _SHARED.pop("engine", None) is not None:
        engine.close()


@pytest.fixture(scope="session")
def api_server(engine):
    import uvicorn
    from esurge_server_openai import eSurgeApiServer

    server = eSurgeApiServer(engine, require_api_key=True, api_keys={API_KEY: {"label": "tests"}})
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    server.base_url = f"http://127.0.0.1:{port}"
    yield server
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def client(api_server):
    import openai

    return openai.OpenAI(base_url=api_server.base_url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="session")
def http(api_server):
    import httpx

    with httpx.Client(base_url=api_server.base_url, timeout=60) as http:
        yield http


@pytest.fixture(scope="session")
def model(api_server):
    return api_server.model_name
