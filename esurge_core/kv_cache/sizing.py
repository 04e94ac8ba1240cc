"""How many KV-cache pages fit: a pure function of the numbers, plus readers for the numbers.

On an accelerator the budget is `hbm_utilization x device memory - weights - activation
headroom`; on CPU (no HBM) it is an explicit `kv_cache_memory` byte budget, by default a
quarter of the available RAM, at most 4 GiB. `plan_kv_cache` takes plain numbers so tests
can drive it; `read_device_memory` / `read_available_host_memory` fetch them from a JAX
device or /proc/meminfo. Nothing here imports JAX at module import time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esurge_core.errors import ConfigError
from esurge_core.kv_cache.groups import KVCacheGroupSpec, validate_groups

logger = logging.getLogger(__name__)

GIB = 1 << 30
#: Share of available RAM the CPU default budget takes.
CPU_DEFAULT_FRACTION = 0.25
#: Ceiling of the CPU default budget.
CPU_DEFAULT_CAP_BYTES = 4 * GIB
#: Activation headroom on accelerators when the caller gives none: this share of memory.
DEFAULT_ACTIVATION_HEADROOM_FRACTION = 0.05


class KVCacheTooSmallError(ConfigError):
    """The memory budget cannot hold the pages of even one `max_model_len` request."""


@dataclass(frozen=True, slots=True)
class KVCachePlan:
    """The sizing decision.

    Attributes:
        num_pages: Pages to allocate per layer array, the null page 0 included.
        page_size: Tokens per page.
        bytes_per_page: Bytes one page id costs across all layers (K and V).
        budget_bytes: The byte budget the pages were cut from.
        source: Where the budget came from: "kv_cache_memory", "hbm_utilization" or
            "cpu_default".
        pages_per_request: Pages one `max_model_len` request needs at most (all groups).
    """

    num_pages: int
    page_size: int
    bytes_per_page: int
    budget_bytes: int
    source: str
    pages_per_request: int

    @property
    def num_usable_pages(self) -> int:
        """Pages requests can hold (the null page excluded)."""
        return self.num_pages - 1

    @property
    def total_bytes(self) -> int:
        """Bytes the KV-cache arrays take, null page included."""
        return self.num_pages * self.bytes_per_page

    @property
    def token_capacity(self) -> int:
        """Token slots of the usable pages (a page serves one group's layers)."""
        return self.num_usable_pages * self.page_size

    @property
    def max_full_length_requests(self) -> int:
        """How many `max_model_len` requests fit at once, without prefix sharing."""
        return self.num_usable_pages // self.pages_per_request


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    """Memory facts of one device.

    Attributes:
        platform: "cpu", "gpu", "tpu", ...
        bytes_limit: Memory the device can allocate, None where the runtime does not say
            (CPU).
        bytes_in_use: Memory allocated now (weights already loaded count here), or None.
    """

    platform: str
    bytes_limit: int | None
    bytes_in_use: int | None


def bytes_per_page(
    *, num_layers: int, page_size: int, num_kv_heads: int, head_dim: int, dtype_bytes: int
) -> int:
    """Bytes of one page id over all layers: layers x page_size x 2 (K, V) x heads x dim x dtype.

    Every layer has its own `[num_pages, page_size, 2 * num_kv_heads, head_dim]` array
    indexed by the shared page ids (contract C), so a page costs its slot in every layer.
    """
    return num_layers * page_size * 2 * num_kv_heads * head_dim * dtype_bytes


def pages_per_request(
    groups: Sequence[KVCacheGroupSpec],
    num_tokens: int,
    page_size: int,
    max_step_tokens: int | None = None,
) -> int:
    """Most pages one request of `num_tokens` tokens holds, summed over the groups."""
    return sum(
        group.max_pages_per_request(num_tokens, page_size, max_step_tokens) for group in groups
    )


def default_cpu_kv_cache_memory(available_bytes: int) -> int:
    """The CPU budget when none is given: 25% of the available RAM, at most 4 GiB."""
    return min(int(available_bytes * CPU_DEFAULT_FRACTION), CPU_DEFAULT_CAP_BYTES)


def plan_kv_cache(
    *,
    groups: Sequence[KVCacheGroupSpec],
    page_size: int,
    num_kv_heads: int,
    head_dim: int,
    dtype_bytes: int,
    max_model_len: int,
    platform: str,
    device_memory_bytes: int | None = None,
    weight_bytes: int = 0,
    activation_headroom_bytes: int | None = None,
    hbm_utilization: float = 0.85,
    kv_cache_memory: int | None = None,
    available_host_memory: int | None = None,
    max_step_tokens: int | None = None,
) -> KVCachePlan:
    """Decide the number of pages, log the decision, and refuse configs that cannot run.

    Args:
        groups: The model's KV-cache groups (their layers all get pages).
        page_size: Tokens per page.
        num_kv_heads: KV heads per layer (after tensor-parallel sharding: per device).
        head_dim: Head dimension.
        dtype_bytes: Bytes of one K or V element (2 for bf16).
        max_model_len: Longest request; at least one must fit.
        platform: "cpu" uses the CPU rules; anything else the accelerator rules.
        device_memory_bytes: Accelerator memory (`bytes_limit` of `memory_stats()`).
        weight_bytes: Bytes of the model weights on the device.
        activation_headroom_bytes: Room kept for activations and compiled programs;
            None: 5% of `device_memory_bytes`.
        hbm_utilization: Share of accelerator memory eSurge may use (weights + KV cache).
        kv_cache_memory: Explicit KV-cache byte budget; wins over every other rule.
        available_host_memory: Available RAM (MemAvailable) for the CPU default.
        max_step_tokens: Most tokens a request computes per step (chunked-prefill size);
            None: a whole `max_model_len` prompt in one step.

    Raises:
        ConfigError: an input is out of range or a needed number is missing.
        KVCacheTooSmallError: one `max_model_len` request does not fit; the message gives
            the numbers and what to change.
    """
    validate_groups(groups)
    for name, value in (
        ("page_size", page_size),
        ("num_kv_heads", num_kv_heads),
        ("head_dim", head_dim),
        ("dtype_bytes", dtype_bytes),
        ("max_model_len", max_model_len),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1 to size the KV cache; got {value}.")
    num_layers = sum(group.num_layers for group in groups)
    page_bytes = bytes_per_page(
        num_layers=num_layers,
        page_size=page_size,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        dtype_bytes=dtype_bytes,
    )
    budget, source, knob = _budget(
        platform=platform,
        device_memory_bytes=device_memory_bytes,
        weight_bytes=weight_bytes,
        activation_headroom_bytes=activation_headroom_bytes,
        hbm_utilization=hbm_utilization,
        kv_cache_memory=kv_cache_memory,
        available_host_memory=available_host_memory,
    )
    num_pages = max(budget, 0) // page_bytes
    per_request = pages_per_request(groups, max_model_len, page_size, max_step_tokens)
    if num_pages - 1 < per_request:
        raise KVCacheTooSmallError(
            _too_small_message(
                budget=budget,
                source=source,
                knob=knob,
                page_bytes=page_bytes,
                num_pages=num_pages,
                per_request=per_request,
                groups=groups,
                page_size=page_size,
                max_model_len=max_model_len,
                max_step_tokens=max_step_tokens,
                num_layers=num_layers,
                num_kv_heads=num_kv_heads,
                head_dim=head_dim,
                dtype_bytes=dtype_bytes,
                device_memory_bytes=device_memory_bytes,
                weight_bytes=weight_bytes,
                activation_headroom_bytes=activation_headroom_bytes,
            )
        )
    plan = KVCachePlan(
        num_pages=num_pages,
        page_size=page_size,
        bytes_per_page=page_bytes,
        budget_bytes=budget,
        source=source,
        pages_per_request=per_request,
    )
    logger.info(
        "KV cache: %d pages (%d usable) of %d tokens, %s per page, %s in all, budget %s from "
        "%s; %d token slots, %d concurrent max_model_len=%d requests",
        plan.num_pages,
        plan.num_usable_pages,
        page_size,
        _human(page_bytes),
        _human(plan.total_bytes),
        _human(budget),
        source,
        plan.token_capacity,
        plan.max_full_length_requests,
        max_model_len,
    )
    return plan


def _budget(
    *,
    platform: str,
    device_memory_bytes: int | None,
    weight_bytes: int,
    activation_headroom_bytes: int | None,
    hbm_utilization: float,
    kv_cache_memory: int | None,
    available_host_memory: int | None,
) -> tuple[int, str, str]:
    """(budget bytes, source, what the user should raise)."""
    if kv_cache_memory is not None:
        if kv_cache_memory < 1:
            raise ConfigError(
                f"kv_cache_memory must be a positive byte count; got {kv_cache_memory}."
            )
        return kv_cache_memory, "kv_cache_memory", "kv_cache_memory"
    if platform == "cpu":
        if available_host_memory is None:
            raise ConfigError(
                "cannot size the KV cache on CPU: available RAM is unknown (no /proc/meminfo); "
                "set kv_cache_memory to a byte budget."
            )
        return (
            default_cpu_kv_cache_memory(available_host_memory),
            "cpu_default",
            "kv_cache_memory",
        )
    if device_memory_bytes is None or device_memory_bytes < 1:
        raise ConfigError(
            f"cannot size the KV cache on {platform}: device memory is unknown "
            f"(got {device_memory_bytes}); set kv_cache_memory to a byte budget."
        )
    if not 0.0 < hbm_utilization <= 1.0:
        raise ConfigError(f"hbm_utilization must be in (0, 1]; got {hbm_utilization}.")
    headroom = (
        int(device_memory_bytes * DEFAULT_ACTIVATION_HEADROOM_FRACTION)
        if activation_headroom_bytes is None
        else activation_headroom_bytes
    )
    budget = int(hbm_utilization * device_memory_bytes) - weight_bytes - headroom
    return budget, "hbm_utilization", "hbm_utilization"


def _too_small_message(
    *,
    budget: int,
    source: str,
    knob: str,
    page_bytes: int,
    num_pages: int,
    per_request: int,
    groups: Sequence[KVCacheGroupSpec],
    page_size: int,
    max_model_len: int,
    max_step_tokens: int | None,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    dtype_bytes: int,
    device_memory_bytes: int | None,
    weight_bytes: int,
    activation_headroom_bytes: int | None,
) -> str:
    usable = max(num_pages - 1, 0)
    needed_bytes = (per_request + 1) * page_bytes
    # Longest request that fits the pages we have (pages needed grow with the length).
    low, high = 0, max_model_len
    while low < high:
        middle = (low + high + 1) // 2
        if pages_per_request(groups, middle, page_size, max_step_tokens) <= usable:
            low = middle
        else:
            high = middle - 1
    lines = [
        f"The KV cache cannot hold one request of max_model_len={max_model_len}: it needs "
        f"{per_request} pages (+1 null page) = {_human(needed_bytes)}, but the budget of "
        f"{_human(budget)} (from {source}) buys {usable} usable pages of {_human(page_bytes)} "
        f"(page_size {page_size} x {num_layers} layers x 2 x {num_kv_heads} KV heads x "
        f"head_dim {head_dim} x {dtype_bytes} bytes).",
        "Change one of:",
    ]
    if low > 0:
        lines.append(f"  - lower max_model_len to at most {low};")
    if knob == "hbm_utilization" and device_memory_bytes:
        headroom = (
            int(device_memory_bytes * DEFAULT_ACTIVATION_HEADROOM_FRACTION)
            if activation_headroom_bytes is None
            else activation_headroom_bytes
        )
        share = (needed_bytes + weight_bytes + headroom) / device_memory_bytes
        if share <= 1.0:
            lines.append(f"  - raise hbm_utilization to at least {share:.3f};")
        else:
            lines.append(
                f"  - weights ({_human(weight_bytes)}) + headroom ({_human(headroom)}) + this "
                f"cache exceed the device's {_human(device_memory_bytes)}: use more devices "
                "(tensor parallelism) or a smaller model;"
            )
    else:
        lines.append(f"  - raise kv_cache_memory to at least {needed_bytes} bytes;")
    lines.append("  - store the KV cache in a smaller dtype (e.g. bf16 instead of fp32).")
    return "\n".join(lines)


def _human(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"  # pragma: no cover - the loop always returns


def read_available_host_memory(meminfo_path: str | Path = "/proc/meminfo") -> int | None:
    """MemAvailable from /proc/meminfo in bytes, or None where the file does not exist."""
    try:
        text = Path(meminfo_path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            scale = 1024 if len(parts) > 2 and parts[2].lower() == "kb" else 1
            return int(parts[1]) * scale
    return None


def read_device_memory(device: Any = None) -> DeviceMemory:
    """Memory facts of a JAX device (the first local device by default).

    Imports JAX only when called. CPU devices report no limit (`memory_stats()` is None).
    """
    if device is None:
        import jax  # deferred: sizing must not initialise a backend at import time

        device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    limit = in_use = None
    if stats:
        limit = stats.get("bytes_limit")
        in_use = stats.get("bytes_in_use")
    return DeviceMemory(platform=device.platform, bytes_limit=limit, bytes_in_use=in_use)


def plan_kv_cache_for_device(device: Any = None, **kwargs: Any) -> KVCachePlan:
    """`plan_kv_cache` with platform, device memory and available RAM read from the machine.

    `kwargs` are the remaining `plan_kv_cache` arguments (groups, page_size, ...,
    weight_bytes, hbm_utilization, kv_cache_memory).
    """
    memory = read_device_memory(device)
    kwargs.setdefault("platform", memory.platform)
    if memory.platform != "cpu":
        kwargs.setdefault("device_memory_bytes", memory.bytes_limit)
    else:
        kwargs.setdefault("available_host_memory", read_available_host_memory())
    return plan_kv_cache(**kwargs)
