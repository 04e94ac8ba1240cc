"""The OpenAI-compatible server, end to end: a real uvicorn server, the official client."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.server.conftest import API_KEY

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MESSAGES = [{"role": "user", "content": "Name three colors."}]


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


# ------------------------------------------------------------------ chat


def test_chat_completion_returns_an_assistant_message_with_usage(client, model):
    response = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=8, temperature=0
    )
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == model
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_stream_concatenates_to_the_non_streamed_answer(client, model):
    whole = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=8, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=8, temperature=0, stream=True
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_stream_include_usage_sends_exactly_one_usage_chunk_last(client, model):
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens <= 6


def test_chat_n_returns_n_choices_streamed_or_not(client, model):
    response = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=4, n=3, seed=1
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    chunks = list(
        client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=4, n=2, seed=1, stream=True
        )
    )
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_chat_logprobs_have_top_alternatives(client, model):
    response = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob


def test_seed_makes_sampling_reproducible(client, model):
    def sample():
        return client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=8, temperature=1.0, seed=1234
        )

    assert sample().choices[0].message.content == sample().choices[0].message.content


# ------------------------------------------------------------------ completions


def test_completion_text_and_stop_string(client, model):
    free = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=8, temperature=0)
    assert free.object == "text_completion"
    text = free.choices[0].text
    assert text
    stop = text.strip()[:1]
    stopped = client.completions.create(
        model=model, prompt="1, 2, 3, 4,", max_tokens=8, temperature=0, stop=[stop]
    )
    assert stop not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"


def test_completion_accepts_many_prompts_and_token_ids(client, model, http):
    ids = http.post("/tokenize", json={"prompt": "Hello"}, headers=AUTH).json()["tokens"]
    response = client.completions.create(
        model=model, prompt=["Hello", "The sky is"], max_tokens=3, temperature=0, n=2
    )
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    by_ids = client.completions.create(model=model, prompt=ids, max_tokens=3, temperature=0)
    assert by_ids.choices[0].text == response.choices[0].text


def test_completion_stream_echo_and_logprobs(client, model):
    chunks = list(
        client.completions.create(
            model=model, prompt="Hello", max_tokens=4, temperature=0, echo=True, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks).startswith("Hello")
    response = client.completions.create(
        model=model, prompt="Hello", max_tokens=4, temperature=0, logprobs=2
    )
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 4
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == 0


# ------------------------------------------------------------------ other routes


def test_models_version_tokenize_detokenize(http, model, engine):
    assert http.get("/v1/models", headers=AUTH).json()["data"][0]["id"] == model
    assert http.get("/version", headers=AUTH).json()["version"]
    ids = http.post("/tokenize", json={"prompt": "Hi there"}, headers=AUTH).json()["tokens"]
    assert http.post("/detokenize", json={"tokens": ids}, headers=AUTH).json()["prompt"] == (
        "Hi there"
    )
    chat = http.post("/tokenize", json={"messages": MESSAGES}, headers=AUTH).json()
    assert chat["tokens"] == engine.apply_chat_template(MESSAGES)


# ------------------------------------------------------------------ auth


def test_health_is_open_without_a_key(http):
    response = http.get("/health")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "where", ["bearer", "x-api-key", "query"], ids=["bearer", "x-api-key", "query"]
)
def test_key_is_accepted_from_each_location(http, where):
    headers, params = {}, {}
    if where == "bearer":
        headers = {"Authorization": f"Bearer {API_KEY}"}
    elif where == "x-api-key":
        headers = {"X-API-Key": API_KEY}
    else:
        params = {"api_key": API_KEY}
    assert http.get("/v1/models", headers=headers, params=params).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["none", "wrong"])
def test_missing_or_wrong_key_is_401_in_openai_shape(http, headers):
    response = http.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert error_of(response)["type"] == "authentication_error"


def test_revoked_key_is_rejected(api_server, http):
    key = api_server.generate_api_key(label="temporary")
    headers = {"Authorization": f"Bearer {key}"}
    assert http.get("/v1/models", headers=headers).status_code == 200
    assert api_server.revoke_api_key(key)
    assert http.get("/v1/models", headers=headers).status_code == 401


def test_usage_per_key_equals_the_tokens_served(api_server, model):
    key = api_server.generate_api_key(label="metered")
    client = openai.OpenAI(base_url=api_server.base_url + "/v1", api_key=key, max_retries=0)
    one = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5)
    two = client.completions.create(model=model, prompt="Hello", max_tokens=3)
    chunks = list(
        client.completions.create(
            model=model,
            prompt="Hi",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    three = chunks[-1].usage
    usage = api_server.usage()["metered"]
    assert usage.requests == 3
    assert usage.prompt_tokens == sum(u.prompt_tokens for u in (one.usage, two.usage, three))
    assert usage.completion_tokens == sum(
        u.completion_tokens for u in (one.usage, two.usage, three)
    )


def test_key_store_keeps_only_digests(api_server):
    key = api_server.generate_api_key(label="secret")
    stored = repr(api_server.keys._records)
    assert key not in stored and "secret" in stored
    api_server.revoke_api_key(key)


# ------------------------------------------------------------------ errors


BAD_CHAT = {
    "temperature": ({"temperature": -1}, "temperature"),
    "top_p": ({"top_p": 0}, "top_p"),
    "n": ({"n": 0}, "n"),
    "max_tokens": ({"max_tokens": 0}, "max_tokens"),
    "presence_penalty": ({"presence_penalty": 5.0}, "presence_penalty"),
    "top_logprobs": ({"logprobs": True, "top_logprobs": 99}, "top_logprobs"),
    "logit_bias": ({"logit_bias": {"5": 500}}, "logit_bias"),
    "stop_type": ({"stop": 5}, "stop"),
    "messages_missing": ({"messages": None}, "messages"),
    "messages_empty": ({"messages": []}, "messages"),
    "stream_type": ({"stream": "yes"}, "stream"),
    "min_tokens": ({"min_tokens": 10, "max_tokens": 2}, None),
}


@pytest.mark.parametrize("case", sorted(BAD_CHAT))
def test_bad_chat_request_is_400_naming_the_field(http, model, case):
    patch, param = BAD_CHAT[case]
    body = {"model": model, "messages": MESSAGES, "max_tokens": 4, **patch}
    body = {k: v for k, v in body.items() if v is not None}
    response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_invalid_json_is_400(http):
    response = http.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error_of(response)


def test_bad_completion_prompts_are_400(http, model):
    for prompt in ([], "", [10**9], {"a": 1}):
        response = http.post(
            "/v1/completions", json={"model": model, "prompt": prompt}, headers=AUTH
        )
        assert response.status_code == 400, (prompt, response.text)
        assert error_of(response)["param"] == "prompt"


def test_unknown_model_is_404_after_auth(http):
    body = {"model": "no-such-model", "messages": MESSAGES}
    assert http.post("/v1/chat/completions", json=body).status_code == 401
    response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


def test_context_overflow_is_400_with_the_numbers(http, model, engine):
    body = {"model": model, "prompt": "hello " * 300, "max_tokens": 400}
    response = http.post("/v1/completions", json=body, headers=AUTH)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "context_length_exceeded"
    assert str(engine.max_model_len) in error["message"] and "400" in error["message"]


# ------------------------------------------------------------------ disconnect


@pytest.fixture
def aborted(engine, monkeypatch):
    """The request ids the engine was asked to abort during the test."""
    ids: list[str] = []
    original = engine.abort

    def recording_abort(request_id):
        ids.append(request_id)
        original(request_id)

    monkeypatch.setattr(engine, "abort", recording_abort)
    return ids


def wait_for_pages(engine, baseline):
    deadline = time.monotonic() + 30
    while engine.kv_cache.stats().num_used_pages != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return engine.kv_cache.stats().num_used_pages


def test_client_disconnect_mid_stream_aborts_and_frees_the_kv_pages(
    api_server, engine, model, aborted
):
    import httpx

    baseline = engine.kv_cache.stats().num_used_pages
    body = {
        "model": model,
        "prompt": "Count slowly: one, two,",
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(base_url=api_server.base_url, timeout=60) as http,
        http.stream("POST", "/v1/completions", json=body, headers=AUTH) as response,
    ):
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"]
        assert engine.kv_cache.stats().num_used_pages > baseline
    assert wait_for_pages(engine, baseline) == baseline
    assert any(request_id.startswith("cmpl-") for request_id in aborted)


def test_client_disconnect_while_waiting_for_a_whole_answer_aborts_it(
    api_server, engine, model, aborted
):
    import httpx

    baseline = engine.kv_cache.stats().num_used_pages
    body = {"model": model, "prompt": "Count: one,", "max_tokens": 480, "ignore_eos": True}
    with (
        httpx.Client(base_url=api_server.base_url, timeout=httpx.Timeout(60, read=0.5)) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.post("/v1/completions", json=body, headers=AUTH)
    deadline = time.monotonic() + 30
    while not aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(request_id.startswith("cmpl-") for request_id in aborted)
    assert wait_for_pages(engine, baseline) == baseline
