"""SamplingParams: every field is validated, errors name the field, value and range."""

import math

import pytest
from pydantic import ValidationError

from esurge_core.sampling import SamplingParams


def test_defaults_are_valid_and_follow_vllm():
    params = SamplingParams()
    assert (params.n, params.max_tokens, params.temperature, params.top_p, params.top_k) == (
        1,
        16,
        1.0,
        1.0,
        -1,
    )
    assert params.stop == () and params.stop_token_ids == () and params.skip_special_tokens


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("n", 0, "greater than or equal to 1"),
        ("n", 129, "less than or equal to 128"),
        ("max_tokens", 0, "greater than or equal to 1"),
        ("min_tokens", -1, "greater than or equal to 0"),
        ("temperature", -0.1, "greater than or equal to 0"),
        ("temperature", math.nan, "finite number"),
        ("temperature", math.inf, "finite number"),
        ("top_p", 0.0, "greater than 0"),
        ("top_p", 1.5, "less than or equal to 1"),
        ("top_p", math.nan, "finite number"),
        ("top_k", -2, "greater than or equal to -1"),
        ("top_k", 1.5, "valid integer"),
        ("min_p", -0.01, "greater than or equal to 0"),
        ("min_p", 1.01, "less than or equal to 1"),
        ("repetition_penalty", 0.0, "greater than 0"),
        ("repetition_penalty", math.inf, "finite number"),
        ("presence_penalty", -2.5, "greater than or equal to -2"),
        ("presence_penalty", 2.5, "less than or equal to 2"),
        ("frequency_penalty", -2.01, "greater than or equal to -2"),
        ("frequency_penalty", 3, "less than or equal to 2"),
        ("frequency_penalty", math.nan, "finite number"),
        ("logit_bias", {5: 101.0}, "[-100, 100]"),
        ("logit_bias", {5: -100.5}, "[-100, 100]"),
        ("logit_bias", {5: math.nan}, "finite number"),
        ("logit_bias", {-1: 1.0}, "must be >= 0"),
        ("seed", 1.5, "valid integer"),
        ("stop", [""], "empty string"),
        ("stop", [1], "valid string"),
        ("stop_token_ids", [-3], "must be >= 0"),
        ("logprobs", -1, "greater than or equal to 0"),
        ("logprobs", 21, "less than or equal to 20"),
        ("prompt_logprobs", 21, "less than or equal to 20"),
        ("ignore_eos", 1, "valid boolean"),
        ("skip_special_tokens", "yes", "valid boolean"),
        ("spaces_between_special_tokens", None, "valid boolean"),
        ("include_stop_str_in_output", 0, "valid boolean"),
        ("n", True, "valid integer"),
    ],
)
def test_invalid_value_is_rejected_naming_field_and_range(field, value, expected):
    with pytest.raises(ValidationError) as info:
        SamplingParams(**{field: value})
    message = str(info.value)
    assert field in message
    assert expected in message


def test_unknown_field_is_rejected():
    with pytest.raises(ValidationError, match="best_of"):
        SamplingParams(best_of=2)


def test_min_tokens_above_max_tokens_is_rejected():
    with pytest.raises(ValidationError, match=r"min_tokens \(5\) must be <= max_tokens \(4\)"):
        SamplingParams(min_tokens=5, max_tokens=4)


def test_max_tokens_none_means_up_to_model_length():
    assert SamplingParams(max_tokens=None, min_tokens=100).max_tokens is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0),
        ("top_p", 1),
        ("top_k", 0),
        ("top_k", -1),
        ("min_p", 1.0),
        ("presence_penalty", -2.0),
        ("frequency_penalty", 2),
        ("logprobs", 0),
        ("logprobs", 20),
        ("n", 128),
        ("seed", -(2**70)),
        ("logit_bias", {0: -100, 7: 100.0}),
    ],
)
def test_boundary_value_is_accepted(field, value):
    SamplingParams(**{field: value})


def test_logit_bias_accepts_json_string_token_ids():
    assert SamplingParams(logit_bias={"50": 2.0}).logit_bias == {50: 2.0}


def test_stop_accepts_one_string_or_a_list():
    assert SamplingParams(stop="END").stop == ("END",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(stop=None).stop == ()


def test_params_are_immutable():
    params = SamplingParams()
    with pytest.raises(ValidationError):
        params.temperature = 0.5


def test_greedy_is_temperature_zero():
    assert SamplingParams(temperature=0.0).greedy
    assert not SamplingParams(temperature=0.1).greedy


def test_validate_for_vocab_rejects_out_of_range_logit_bias_ids():
    params = SamplingParams(logit_bias={3: 1.0, 100: 1.0, 200: -1.0})
    with pytest.raises(
        ValueError, match=r"logit_bias has token ids \[100, 200\] outside \[0, 99\]"
    ):
        params.validate_for_vocab(100)


def test_validate_for_vocab_rejects_out_of_range_stop_token_ids():
    with pytest.raises(ValueError, match=r"stop_token_ids has token ids \[10\] outside \[0, 9\]"):
        SamplingParams(stop_token_ids=[1, 10]).validate_for_vocab(10)


def test_validate_for_vocab_accepts_ids_in_range():
    SamplingParams(logit_bias={99: 1.0}, stop_token_ids=[0, 99]).validate_for_vocab(100)
