"""The ``cpu`` attention backend object handed to models."""

from __future__ import annotations

from dataclasses import dataclass

from esurge_attention_cpu.kernel import ragged_paged_attention, register_kernel, write_kv_pages


@dataclass(frozen=True)
class CPUAttentionBackend:
    """Ragged paged attention as a native C++ kernel (see ``kernel``), and the K/V page write.

    Creating the backend builds the kernel for this machine if it is not cached yet, so a
    missing compiler is reported when the engine starts, not in the middle of tracing.
    """

    name: str = "cpu"
    # Items walk each sequence's visible keys; the page table's width is only a stride.
    cost_follows_kv_lens: bool = True

    def __post_init__(self) -> None:
        register_kernel()

    ragged_paged_attention = staticmethod(ragged_paged_attention)
    write_kv_pages = staticmethod(write_kv_pages)
