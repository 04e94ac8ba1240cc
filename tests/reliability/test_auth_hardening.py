"""Keys: constant-time matching, never logged or echoed, no state per bogus key, instant
revocation, per-key rate and token limits, CORS closed by default, no header injection."""

from __future__ import annotations

import hmac
import logging

import httpx
import pytest
from esurge_server_openai.auth import ApiKeyStore
from esurge_server_openai.rate_limit import RateLimiter

from tests.reliability.conftest import AUTH, KEY, MESSAGES, error_of, make_api
from tests.reliability.conftest import serve as serve_api

BODY = {"messages": MESSAGES, "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def served(engine):
    api = make_api(engine, max_tokens_cap=8)
    with (
        serve_api(api, log_level="info") as uv,
        httpx.Client(timeout=60, base_url=uv.base_url) as http,
    ):
        yield api, http


def test_lookup_compares_every_digest_in_constant_time(monkeypatch):
    store = ApiKeyStore({f"key-{i}": {"label": f"l{i}"} for i in range(5)})
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for key in ("key-0", "key-4", "nope"):
        calls.clear()
        store.lookup(key)
        assert calls == [(32, 32)] * 5  # every record, digests of equal length, no early exit


def test_query_string_key_is_redacted_in_the_access_log(served):
    _, http = served
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    access = logging.getLogger("uvicorn.access")
    handler, level = Capture(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        assert http.get("/v1/models", params={"api_key": KEY}).status_code == 200
        assert http.get("/v1/models", params={"api_key": "sk-wrong-secret"}).status_code == 401
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert any("/v1/models" in line for line in records)
    assert all(KEY not in line and "sk-wrong-secret" not in line for line in records)
    assert any("api_key=REDACTED" in line for line in records)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer sk-secret-wrong-1"},
        {"X-API-Key": "sk-secret-wrong-1"},
    ],
)
def test_an_invalid_key_is_never_echoed(served, headers):
    _, http = served
    response = http.post("/v1/chat/completions", json=BODY, headers=headers)
    assert response.status_code == 401
    assert "sk-secret-wrong-1" not in response.text


def test_a_flood_of_bogus_keys_leaves_no_state(served):
    api, http = served
    records_before = len(api.keys._records)
    tracked_before = api.rate_limiter.num_tracked_keys
    for index in range(300):
        response = http.get("/v1/models", headers={"Authorization": f"Bearer bogus-{index}"})
        assert response.status_code == 401
    assert len(api.keys._records) == records_before
    assert api.rate_limiter.num_tracked_keys == tracked_before
    assert set(api.usage()) == {"reliability"}


def test_a_revoked_key_fails_on_the_next_request(served):
    api, http = served
    key = api.generate_api_key("short-lived")
    headers = {"Authorization": f"Bearer {key}"}
    assert http.get("/v1/models", headers=headers).status_code == 200
    assert api.revoke_api_key(key)
    response = http.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_requests_over_the_per_key_rate_are_429_with_retry_after_and_not_billed(engine):
    api = make_api(engine, requests_per_minute=2, max_tokens_cap=4)
    with serve_api(api) as uv, httpx.Client(timeout=60, base_url=uv.base_url, headers=AUTH) as http:
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200
        refused = http.post("/v1/chat/completions", json=BODY)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert error_of(refused)["code"] == "rate_limit"
    assert api.usage()["reliability"].requests == 2


def test_a_key_over_its_token_quota_is_429_until_the_window_passes(engine):
    api = make_api(engine, tokens_per_minute=10, max_tokens_cap=4)
    with serve_api(api) as uv, httpx.Client(timeout=60, base_url=uv.base_url, headers=AUTH) as http:
        first = http.post("/v1/chat/completions", json=BODY)
        assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 10
        refused = http.post("/v1/chat/completions", json=BODY)
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "token_quota"
    assert "Retry-After" in refused.headers
    assert api.usage()["reliability"].requests == 1


def test_rate_windows_slide():
    limiter = RateLimiter(requests_per_minute=1, tokens_per_minute=None)
    limiter.admit("k", now=0.0)
    with pytest.raises(Exception, match="requests per minute"):
        limiter.admit("k", now=59.0)
    limiter.admit("k", now=60.5)


def test_cors_is_closed_by_default(served):
    _, http = served
    preflight = http.options(
        "/v1/chat/completions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    response = http.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_wildcard_cors_never_allows_credentials(engine):
    api = make_api(engine, cors_allow_origins=("*",))
    with serve_api(api) as uv, httpx.Client(timeout=60, base_url=uv.base_url) as http:
        response = http.get("/health", headers={"Origin": "https://site.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


def test_cr_lf_in_a_model_name_cannot_inject_headers_or_log_lines(served, caplog):
    _, http = served
    body = {**BODY, "model": "x\r\nSet-Cookie: pwned=1\r\n"}
    with caplog.at_level(logging.INFO):
        response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 404
    assert "set-cookie" not in response.headers
    assert "\r\n" not in error_of(response)["message"]
    assert all("\n" not in record.getMessage() for record in caplog.records)


def test_cr_lf_in_the_user_field_is_accepted_as_data(served):
    _, http = served
    response = http.post(
        "/v1/chat/completions", json={**BODY, "user": "a\r\nX-Evil: 1"}, headers=AUTH
    )
    assert response.status_code == 200
    assert "x-evil" not in response.headers
