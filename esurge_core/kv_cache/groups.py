"""KV-cache groups: which layers share one page table, and which keys their queries can see.

This is contract C between the models and the KV-cache manager. A model declares its groups
(`model.kv_cache_groups()`); the manager keeps one page table per group for every request,
all groups drawing pages of one page size from one shared pool. The attention pattern of a
group decides which pages a request may release early: a full-attention group keeps every
page, a sliding-window group releases pages that fell wholly out of the window, a chunked
group releases pages before the current chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from esurge_core.errors import ConfigError

AttentionPattern = Literal["full", "sliding_window", "chunked"]

_PATTERNS = ("full", "sliding_window", "chunked")


@dataclass(frozen=True, slots=True)
class KVCacheGroupSpec:
    """Layers that attend alike and therefore share one page table per request.

    Attributes:
        pattern: "full" (a query at position p sees keys [0, p]), "sliding_window" (keys in
            (p - sliding_window, p]) or "chunked" (keys k <= p with
            k // chunk_size == p // chunk_size, as in Llama 4's local layers).
        layer_indices: Decoder layers of this group, each layer in exactly one group.
        sliding_window: Window length in tokens (query included) for "sliding_window".
        chunk_size: Chunk length in tokens for "chunked".
    """

    pattern: AttentionPattern
    layer_indices: tuple[int, ...]
    sliding_window: int | None = None
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.pattern not in _PATTERNS:
            raise ConfigError(
                f"KV-cache group pattern {self.pattern!r} is unknown; use one of {_PATTERNS}."
            )
        if not self.layer_indices:
            raise ConfigError("a KV-cache group needs at least one layer index; got none.")
        if len(set(self.layer_indices)) != len(self.layer_indices):
            raise ConfigError(f"KV-cache group layer indices repeat a layer: {self.layer_indices}.")
        if any(index < 0 for index in self.layer_indices):
            raise ConfigError(f"KV-cache group layer indices must be >= 0: {self.layer_indices}.")
        if self.pattern == "sliding_window":
            if self.sliding_window is None or self.sliding_window < 1:
                raise ConfigError(
                    "a 'sliding_window' KV-cache group needs sliding_window >= 1; "
                    f"got {self.sliding_window}."
                )
        elif self.sliding_window is not None:
            raise ConfigError(
                f"sliding_window={self.sliding_window} is only valid with pattern "
                f"'sliding_window', not {self.pattern!r}."
            )
        if self.pattern == "chunked":
            if self.chunk_size is None or self.chunk_size < 1:
                raise ConfigError(
                    f"a 'chunked' KV-cache group needs chunk_size >= 1; got {self.chunk_size}."
                )
        elif self.chunk_size is not None:
            raise ConfigError(
                f"chunk_size={self.chunk_size} is only valid with pattern 'chunked', "
                f"not {self.pattern!r}."
            )

    @property
    def num_layers(self) -> int:
        """Number of layers in the group."""
        return len(self.layer_indices)

    def first_visible_position(self, position: int) -> int:
        """The earliest key position that a query at `position` attends to."""
        if self.pattern == "sliding_window":
            window = self.sliding_window
            assert window is not None  # checked in __post_init__
            return max(0, position - window + 1)
        if self.pattern == "chunked":
            chunk = self.chunk_size
            assert chunk is not None  # checked in __post_init__
            return position - position % chunk
        return 0

    def max_pages_per_request(
        self, num_tokens: int, page_size: int, max_step_tokens: int | None = None
    ) -> int:
        """The most real pages one request of `num_tokens` tokens holds in this group.

        Args:
            num_tokens: Length of the request (prompt + output), e.g. `max_model_len`.
            page_size: Tokens per page.
            max_step_tokens: Most tokens the request computes in one step (the chunked-prefill
                size); None means the whole request in one step.

        A step that computes n tokens from position c needs keys from
        `first_visible_position(c)` to c + n - 1. For a window (or chunk) of w tokens that
        span is at most w + n - 1 tokens at any page offset, so
        `ceil((w + n - 2) / page_size) + 1` pages; with n = 1 (decoding) that is
        `ceil((w - 1) / page_size) + 1`.
        """
        all_pages = -(-num_tokens // page_size)
        if self.pattern == "full":
            return all_pages
        width = self.sliding_window if self.pattern == "sliding_window" else self.chunk_size
        assert width is not None  # checked in __post_init__
        step = num_tokens if max_step_tokens is None else max(1, min(max_step_tokens, num_tokens))
        bounded = -(-(width + step - 2) // page_size) + 1
        return min(all_pages, bounded)


def validate_groups(groups: Sequence[KVCacheGroupSpec]) -> None:
    """Check that a model's groups are usable together: at least one, no layer in two groups.

    Raises:
        ConfigError: naming the offending layer or the empty list.
    """
    if not groups:
        raise ConfigError("a model must declare at least one KV-cache group; got none.")
    owner: dict[int, int] = {}
    for index, group in enumerate(groups):
        if not isinstance(group, KVCacheGroupSpec):
            raise ConfigError(
                f"KV-cache group {index} is a {type(group).__name__}, not a KVCacheGroupSpec."
            )
        for layer in group.layer_indices:
            if layer in owner:
                raise ConfigError(
                    f"layer {layer} is in KV-cache groups {owner[layer]} and {index}; "
                    "each layer belongs to exactly one group."
                )
            owner[layer] = index
