"""Bad input is a 4xx in OpenAI's shape naming the field, never a 500 or a 422, and leaves
the server serving with the engine at its baseline."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.reliability.conftest import AUTH, MESSAGES, assert_back_to_baseline, error_of, make_api
from tests.reliability.conftest import serve as serve_api

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@pytest.fixture(scope="module")
def url(engine):
    with serve_api(make_api(engine, max_tokens_cap=64, max_body_bytes=64 << 10)) as uv:
        yield uv.base_url


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
        yield client


def chat_with(**fields):
    return {"messages": MESSAGES, "max_tokens": 2, **fields}


def raw(http, path, content, content_type="application/json"):
    return http.post(path, content=content, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"\xff\xfe\xfa{}", "not valid JSON"),
        (b"[" * 20_000 + b"]" * 20_000, "nested deeper"),
        (
            json.dumps(
                {
                    "messages": MESSAGES,
                    "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
                }
            ).encode(),
            "nested deeper",
        ),
        (b'{"messages": [{"role": "user", "content": "a\\u0000b"}]}', "NUL"),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
    ],
)
def test_malformed_body_is_a_400(http, content, fragment):
    response = raw(http, CHAT, content)
    assert response.status_code == 400
    assert fragment in error_of(response)["message"]


def test_wrong_content_type_is_a_415(http):
    response = raw(http, CHAT, b"messages=hi", "application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in error_of(response)["message"]


def test_oversized_body_is_a_413_before_parsing(http):
    response = raw(http, CHAT, b"x" * (65 << 10))  # not even JSON: never parsed
    assert response.status_code == 413
    assert "65536" in error_of(response)["message"]


def test_oversized_chunked_body_is_a_413(http):
    def chunks():
        for _ in range(80):
            yield b"x" * 1024

    response = http.post(CHAT, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_huge_headers_are_refused_and_the_server_keeps_serving(url, http):
    with httpx.Client(base_url=url, timeout=60) as fresh:
        response = fresh.get("/health", headers={"X-Big": "a" * (64 << 10)})
    assert response.status_code in (400, 431)
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 2.0}, "min_p"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": "x"}, "frequency_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"seed": 2**70}, "seed"),
        ({"seed": "1"}, "seed"),
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 65}, "max_tokens"),
        ({"max_tokens": 2**40}, "max_tokens"),
        ({"max_completion_tokens": 100}, "max_completion_tokens"),
        ({"min_tokens": 5, "max_tokens": 2}, None),
        ({"top_k": 2**40}, "top_k"),
        ({"stream": "yes"}, "stream"),
        ({"stop": 5}, "stop"),
        ({"stop": ["a"] * 9}, "stop"),
        ({"stop": ["x" * 257]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"stop_token_ids": [10**9]}, "stop_token_ids"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"99999999": 1}}, "logit_bias"),
        ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"priority": 2**40}, "priority"),
        ({"stream_options": {"include_usage": "y"}}, "stream_options"),
        ({"model": 5}, "model"),
    ],
)
def test_bad_sampling_field_is_a_400_naming_it(http, fields, param):
    response = http.post(CHAT, json=chat_with(**fields))
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty", "min_p"])
def test_nan_and_infinite_numbers_are_a_400_naming_the_field(http, field, literal):
    body = '{"messages": [{"role": "user", "content": "hi"}], "' + field + '": ' + literal + "}"
    response = raw(http, CHAT, body.encode())
    assert response.status_code == 400
    assert error_of(response)["param"] == field


def test_nan_logit_bias_is_a_400(http):
    body = b'{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": NaN}}'
    response = raw(http, CHAT, body)
    assert response.status_code == 400
    assert error_of(response)["param"] == "logit_bias"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": [5, 10**9]}, "prompt"),
        ({"prompt": [[1, 2], [-1]]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [True, False]}, "prompt"),
        ({"prompt": {"a": 1}}, "prompt"),
        ({"prompt": ["a"] * 33}, "prompt"),
        ({"prompt": "hi", "logprobs": 21}, "logprobs"),
        ({"prompt": "hi", "logprobs": -1}, "logprobs"),
        ({}, "prompt"),
    ],
)
def test_bad_completion_prompt_is_a_400(http, body, param):
    response = http.post(COMPLETIONS, json={"max_tokens": 2, **body})
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


@pytest.mark.parametrize(
    "messages",
    [
        None,
        [],
        "hello",
        [5],
        [{"content": "no role"}],
        [{"role": "wizard", "content": "x"}],
        [{"role": "user"}],
        [{"role": "user", "content": 5}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
        [{"role": "user", "content": [{"type": "text"}]}],
        [{"role": "user", "content": "x", "name": 3}],
        [{"role": "user", "content": "x", "tool_calls": [{}]}],
        [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": 1}}]}],
    ],
)
def test_bad_messages_are_a_400(http, messages):
    body = {"max_tokens": 2} if messages is None else {"messages": messages, "max_tokens": 2}
    response = http.post(CHAT, json=body)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == "messages"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": "weather"}, "tools"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}, "tools"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "ghost"}}}, "tool_choice"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "real"}}],
                "tool_choice": {"type": "function", "function": {"name": "ghost"}},
            },
            "tool_choice",
        ),
    ],
)
def test_malformed_tools_and_unknown_tool_choice_are_a_400(http, extra, param):
    response = http.post(CHAT, json=chat_with(**extra))
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


def test_detokenize_out_of_vocabulary_is_a_400(http):
    response = http.post("/detokenize", json={"tokens": [1, 10**12]})
    assert response.status_code == 400
    assert error_of(response)["param"] == "tokens"


def test_after_all_bad_input_the_server_serves_and_the_engine_is_at_baseline(
    http, engine, baseline_pages
):
    response = http.post(CHAT, json=chat_with(temperature=0))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
    assert_back_to_baseline(engine, baseline_pages)
