"""Memory sizing: numbers in, pages out; configs that cannot run fail with the numbers."""

from __future__ import annotations

import logging
import sys

import pytest

from esurge_core.errors import ConfigError
from esurge_core.kv_cache import (
    KVCacheGroupSpec,
    KVCacheTooSmallError,
    bytes_per_page,
    plan_kv_cache,
)
from esurge_core.kv_cache.sizing import (
    CPU_DEFAULT_CAP_BYTES,
    GIB,
    default_cpu_kv_cache_memory,
    read_available_host_memory,
)

FULL_4 = KVCacheGroupSpec("full", (0, 1, 2, 3))
# One page: 4 layers x 16 tokens x 2 x 2 heads x 8 dim x 2 bytes = 4096 bytes.
MODEL = dict(page_size=16, num_kv_heads=2, head_dim=8, dtype_bytes=2)


def test_bytes_per_page_counts_every_layer_k_and_v():
    assert (
        bytes_per_page(num_layers=4, page_size=16, num_kv_heads=2, head_dim=8, dtype_bytes=2)
        == 4096
    )


def test_cpu_budget_from_kv_cache_memory():
    plan = plan_kv_cache(
        groups=[FULL_4], max_model_len=64, platform="cpu", kv_cache_memory=4096 * 100, **MODEL
    )
    assert plan.num_pages == 100
    assert plan.num_usable_pages == 99
    assert plan.source == "kv_cache_memory"
    assert plan.token_capacity == 99 * 16


def test_cpu_default_is_a_quarter_of_available_ram():
    assert default_cpu_kv_cache_memory(8 * GIB) == 2 * GIB


def test_cpu_default_is_capped_at_4_gib():
    assert default_cpu_kv_cache_memory(512 * GIB) == CPU_DEFAULT_CAP_BYTES == 4 * GIB


def test_cpu_without_a_budget_uses_the_available_ram():
    plan = plan_kv_cache(
        groups=[FULL_4], max_model_len=64, platform="cpu", available_host_memory=4096 * 400, **MODEL
    )
    assert plan.num_pages == 100
    assert plan.source == "cpu_default"


def test_cpu_with_nothing_known_asks_for_kv_cache_memory():
    with pytest.raises(ConfigError, match="set kv_cache_memory"):
        plan_kv_cache(groups=[FULL_4], max_model_len=64, platform="cpu", **MODEL)


def test_accelerator_budget_is_utilization_minus_weights_minus_headroom():
    plan = plan_kv_cache(
        groups=[FULL_4],
        max_model_len=64,
        platform="tpu",
        device_memory_bytes=1_000_000,
        hbm_utilization=0.5,
        weight_bytes=100_000,
        activation_headroom_bytes=9_600,
        **MODEL,
    )
    assert plan.budget_bytes == 390_400
    assert plan.num_pages == 390_400 // 4096


def test_accelerator_default_headroom_is_five_percent_of_memory():
    plan = plan_kv_cache(
        groups=[FULL_4],
        max_model_len=64,
        platform="gpu",
        device_memory_bytes=4096 * 1000,
        hbm_utilization=1.0,
        **MODEL,
    )
    assert plan.budget_bytes == 4096 * 950


def test_explicit_kv_cache_memory_wins_on_accelerators():
    plan = plan_kv_cache(
        groups=[FULL_4],
        max_model_len=64,
        platform="gpu",
        device_memory_bytes=10 * GIB,
        kv_cache_memory=4096 * 10,
        **MODEL,
    )
    assert plan.num_pages == 10


def test_every_layer_of_every_group_is_paid_for():
    groups = [
        KVCacheGroupSpec("full", (0,)),
        KVCacheGroupSpec("sliding_window", (1, 2, 3), sliding_window=32),
    ]
    plan = plan_kv_cache(
        groups=groups, max_model_len=64, platform="cpu", kv_cache_memory=4096 * 50, **MODEL
    )
    assert plan.bytes_per_page == 4096


def test_one_request_needs_pages_in_every_group():
    groups = [
        KVCacheGroupSpec("full", (0,)),
        KVCacheGroupSpec("sliding_window", (1, 2, 3), sliding_window=32),
    ]
    plan = plan_kv_cache(
        groups=groups,
        max_model_len=1024,
        platform="cpu",
        kv_cache_memory=4096 * 200,
        max_step_tokens=1,
        **MODEL,
    )
    assert plan.pages_per_request == 64 + 3


def test_config_that_cannot_hold_one_request_fails_with_the_numbers():
    with pytest.raises(KVCacheTooSmallError) as error:
        plan_kv_cache(
            groups=[FULL_4], max_model_len=1024, platform="cpu", kv_cache_memory=4096 * 33, **MODEL
        )
    message = str(error.value)
    assert "max_model_len=1024" in message
    assert "64 pages" in message
    assert "32 usable pages" in message
    assert "lower max_model_len to at most 512" in message
    assert f"raise kv_cache_memory to at least {65 * 4096} bytes" in message


def test_accelerator_too_small_names_the_utilization_to_set():
    with pytest.raises(KVCacheTooSmallError, match=r"raise hbm_utilization to at least 0\.7"):
        plan_kv_cache(
            groups=[FULL_4],
            max_model_len=1024,
            platform="gpu",
            device_memory_bytes=4096 * 1000,
            hbm_utilization=0.1,
            weight_bytes=4096 * 635,
            activation_headroom_bytes=0,
            **MODEL,
        )


def test_weights_larger_than_the_device_say_so():
    with pytest.raises(KVCacheTooSmallError, match="exceed the device"):
        plan_kv_cache(
            groups=[FULL_4],
            max_model_len=64,
            platform="gpu",
            device_memory_bytes=GIB,
            weight_bytes=2 * GIB,
            **MODEL,
        )


def test_decision_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="esurge_core.kv_cache.sizing"):
        plan_kv_cache(
            groups=[FULL_4], max_model_len=64, platform="cpu", kv_cache_memory=4096 * 10, **MODEL
        )
    assert "10 pages (9 usable) of 16 tokens" in caplog.text
    assert "4.00 KiB per page" in caplog.text


def test_meminfo_available_is_read_in_bytes(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  100 kB\nMemAvailable:   2048 kB\n")
    assert read_available_host_memory(meminfo) == 2048 * 1024


def test_missing_meminfo_gives_none(tmp_path):
    assert read_available_host_memory(tmp_path / "absent") is None


def test_importing_the_kv_cache_does_not_import_jax():
    import subprocess

    code = (
        "import sys, esurge_core.kv_cache.sizing, esurge_core.kv_cache; print('jax' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    assert result.stdout.strip() == "False"
