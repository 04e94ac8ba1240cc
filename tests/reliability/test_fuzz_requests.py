"""Property: whatever JSON a client sends to the completion routes, the answer is a 200 or a
4xx in OpenAI's shape, never a 500 or a 422, and the engine ends at its baseline."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import AUTH, assert_back_to_baseline, error_of, make_api
from tests.reliability.conftest import serve as serve_api

pytestmark = pytest.mark.slow

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
SAMPLING_FIELDS = [
    "temperature", "top_p", "top_k", "min_p", "n", "max_tokens", "seed", "stop",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
    "stream", "stream_options", "logprobs", "top_logprobs", "min_tokens", "stop_token_ids",
    "ignore_eos", "priority", "tools", "tool_choice", "user", "echo", "model",
]  # fmt: skip
SMALL_INTS = st.integers(min_value=-3, max_value=40)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]), "content": VALUES}
)
MESSAGES = st.one_of(
    st.just([{"role": "user", "content": "hi"}]), st.lists(MESSAGE, max_size=3), VALUES
)
PROMPTS = st.one_of(st.text(max_size=30), st.lists(SMALL_INTS, max_size=6), VALUES)
FIELDS = st.dictionaries(
    st.sampled_from(SAMPLING_FIELDS), st.one_of(VALUES, SMALL_INTS), max_size=5
)


@pytest.fixture(scope="module")
def http(engine):
    with (
        serve_api(make_api(engine, max_tokens_cap=2)) as uv,
        httpx.Client(base_url=uv.base_url, headers=AUTH, timeout=60) as client,
    ):
        yield client


def post(http: httpx.Client, path: str, body: dict) -> httpx.Response:
    """POST ``body`` as Python writes JSON (NaN and Infinity literals included)."""
    return http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def check(response: httpx.Response) -> None:
    assert response.status_code not in (422, 500), response.text
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        error_of(response)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=MESSAGES, fields=FIELDS)
def test_any_chat_body_is_answered_without_a_server_error(http, messages, fields):
    check(post(http, "/v1/chat/completions", {"messages": messages, **fields}))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(prompt=PROMPTS, fields=FIELDS)
def test_any_completion_body_is_answered_without_a_server_error(http, prompt, fields):
    check(post(http, "/v1/completions", {"prompt": prompt, **fields}))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_answered_without_a_server_error(http, raw):
    check(
        http.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    )


def test_after_fuzzing_the_engine_is_at_baseline(http, engine, baseline_pages):
    assert http.get("/health").status_code == 200
    assert_back_to_baseline(engine, baseline_pages)
