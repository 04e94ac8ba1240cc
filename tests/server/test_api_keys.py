"""API key storage and the routes that need no model (fast, no engine)."""

from __future__ import annotations

import pytest
from esurge_server_openai import eSurgeApiServer
from esurge_server_openai.auth import ApiKeyStore
from fastapi.testclient import TestClient


class StubEngine:
    """Just what the server reads without generating."""

    model_name = "stub-model"
    max_model_len = 64
    is_alive = True
    num_steps = 0
    last_step_time = 0.0

    def has_unfinished_requests(self) -> bool:
        return False


def test_store_keeps_a_digest_not_the_key():
    store = ApiKeyStore({"plain-secret": {"label": "alice"}})
    assert "plain-secret" not in repr(store._records)
    assert store.lookup("plain-secret").label == "alice"
    assert store.lookup("plain-secreT") is None


def test_generated_keys_are_unique_and_revocable():
    store = ApiKeyStore()
    first, second = store.generate("a"), store.generate("b")
    assert first != second
    assert store.revoke(first)
    assert store.lookup(first) is None
    assert store.lookup(second).label == "b"
    assert not store.revoke(first)


def test_registering_the_same_key_twice_is_refused():
    store = ApiKeyStore({"k": {"label": "one"}})
    with pytest.raises(ValueError, match="already registered"):
        store.add("k", "two")


def test_usage_accumulates_per_label():
    store = ApiKeyStore({"k": {"label": "team"}})
    record = store.lookup("k")
    store.record_usage(record, 10, 3)
    store.record_usage(record, 5, 2)
    usage = store.usage()["team"]
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (2, 15, 5)


def test_health_is_503_once_the_engine_is_dead():
    engine = StubEngine()
    client = TestClient(eSurgeApiServer(engine, require_api_key=True).app)
    assert client.get("/health").status_code == 200
    engine.is_alive = False
    assert client.get("/health").status_code == 503


def test_unknown_route_answers_in_openai_shape():
    client = TestClient(eSurgeApiServer(StubEngine()).app)
    response = client.get("/v1/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_wrong_key_location_format_is_401():
    server = eSurgeApiServer(StubEngine(), require_api_key=True, api_keys={"k": {"label": "x"}})
    client = TestClient(server.app)
    assert client.get("/v1/models", headers={"Authorization": "Basic k"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200
