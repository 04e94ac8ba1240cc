"""Engine configuration: defaults, flat EasyDeL-style names, and readable errors."""

from __future__ import annotations

import math

import pytest

from esurge_core.config import EngineConfig
from esurge_core.errors import ConfigError


def test_flat_easydel_names_route_into_sections():
    config = EngineConfig.from_kwargs(
        model="gemma3-270m",
        max_model_len=2048,
        max_num_seqs=8,
        hbm_utilization=0.5,
        page_size=32,
        min_input_pad=4,
        max_num_batched_tokens=256,
        enable_prefix_caching=False,
        use_aot_forward=True,
        runner_verbose=True,
        esurge_name="demo",
        dtype="bfloat16",
        param_dtype="bfloat16",
    )
    assert config.model.model == "gemma3-270m"
    assert config.model.max_model_len == 2048
    assert config.model.dtype == "bfloat16"
    assert config.model.param_dtype == "bfloat16"
    assert config.cache.page_size == 32
    assert config.cache.hbm_utilization == 0.5
    assert config.cache.enable_prefix_caching is False
    assert config.scheduler.max_num_seqs == 8
    assert config.scheduler.max_num_batched_tokens == 256
    assert config.runtime.min_input_pad == 4
    assert config.runtime.use_aot_forward is True
    assert config.runtime.esurge_name == "demo"


def test_defaults_are_valid():
    config = EngineConfig()
    assert config.runtime.attention == "auto"
    assert config.scheduler.scheduler == "fcfs"
    assert config.cache.kv_cache_allocator == "paged"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("page_size", 0, "greater than or equal to 1"),
        ("page_size", 4096, "less than or equal to 1024"),
        ("hbm_utilization", 1.5, "less than or equal to 0.98"),
        ("hbm_utilization", 0.0, "greater than 0"),
        ("hbm_utilization", math.nan, "hbm_utilization"),
        ("max_num_seqs", 0, "greater than or equal to 1"),
        ("max_model_len", 8, "greater than or equal to 16"),
        ("prefix_cache_capacity", -0.1, "greater than or equal to 0"),
        ("min_input_pad", 0, "greater than or equal to 1"),
        ("dtype", "float16", "'float32' or 'bfloat16'"),
        ("kv_cache_memory", 10, "greater than or equal to 1048576"),
        ("engine_thread_nice", -21, "greater than or equal to -20"),
        ("engine_thread_nice", 20, "less than or equal to 19"),
        ("num_speculative_tokens", -1, "greater than or equal to 0"),
        ("num_speculative_tokens", 16, "less than or equal to 15"),
        ("prompt_lookup_max", 0, "greater than or equal to 1"),
        ("speculative_max_seqs", 0, "greater than or equal to 1"),
    ],
)
def test_invalid_value_error_names_field_value_and_range(field, value, fragment):
    with pytest.raises(ConfigError) as excinfo:
        EngineConfig.from_kwargs(**{field: value})
    message = str(excinfo.value)
    assert f".{field} = {value!r}" in message
    assert fragment in message


def test_unknown_field_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown configuration field\(s\) \['max_num_seq'\]"):
        EngineConfig.from_kwargs(max_num_seq=4)


def test_token_budget_below_max_num_seqs_is_rejected_with_both_numbers():
    with pytest.raises(ConfigError, match="max_num_batched_tokens = 8 .*max_num_seqs = 16"):
        EngineConfig.from_kwargs(max_num_seqs=16, max_num_batched_tokens=8)


def test_token_budget_must_hold_a_whole_prompt_without_chunked_prefill():
    with pytest.raises(ConfigError, match="chunked prefill"):
        EngineConfig.from_kwargs(
            max_model_len=4096, max_num_batched_tokens=512, enable_chunked_prefill=False
        )


def test_prompt_lookup_min_above_max_is_rejected_with_both_numbers():
    with pytest.raises(ConfigError, match="prompt_lookup_min = 5 .*prompt_lookup_max = 4"):
        EngineConfig.from_kwargs(num_speculative_tokens=4, prompt_lookup_min=5)


def test_replace_validates_again():
    config = EngineConfig.from_kwargs(page_size=16)
    assert config.replace(page_size=64).cache.page_size == 64
    with pytest.raises(ConfigError, match="page_size"):
        config.replace(page_size=-1)


def test_config_is_immutable():
    config = EngineConfig()
    with pytest.raises(Exception, match="frozen"):
        config.cache.page_size = 4  # type: ignore[misc]


def test_dtype_flags_reach_the_engine_keywords():
    import argparse

    from esurge_core.frontends.engine_args import add_engine_arguments, engine_kwargs

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(
        [
            "--dtype",
            "float32",
            "--param-dtype",
            "bfloat16",
            "--kv-cache-dtype",
            "bfloat16",
            "--matmul",
            "xla",
        ]
    )
    assert engine_kwargs(args) == {
        "dtype": "float32",
        "param_dtype": "bfloat16",
        "kv_cache_dtype": "bfloat16",
        "matmul": "xla",
    }


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {}),
        (["--async-scheduling"], {"async_scheduling": True}),
        (["--no-async-scheduling"], {"async_scheduling": False}),
        (["--engine-thread-nice", "-5"], {"engine_thread_nice": -5}),
        (["--no-huge-page-weights"], {"huge_page_weights": False}),
        (["--huge-page-weights"], {"huge_page_weights": True}),
        (
            ["--num-speculative-tokens", "4", "--prompt-lookup-max", "3"],
            {"num_speculative_tokens": 4, "prompt_lookup_max": 3},
        ),
        (
            ["--prompt-lookup-min", "2", "--speculative-max-seqs", "8"],
            {"prompt_lookup_min": 2, "speculative_max_seqs": 8},
        ),
    ],
)
def test_async_scheduling_flag_is_on_off_or_the_platform_default(flags, expected):
    import argparse

    from esurge_core.frontends.engine_args import add_engine_arguments, engine_kwargs

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    assert engine_kwargs(parser.parse_args(flags)) == expected
