"""Block sizes of the Pallas TPU kernel: a small table of defaults, fitted to each call's shapes.

Two sizes shape the kernel: how many query *rows* (tokens x query heads of one kv head) one
grid program holds, and how many KV *keys* one step of its key loop copies into VMEM. The MXU
is 128 (v5e) or 256 (v6e) wide, so both want to be a few hundred; the K/V double buffer
(``2 * pages * page_size * 2 * num_kv_heads * head_dim`` elements) must stay well inside the
scoped VMEM limit (16-32 MiB by generation). The table holds the targets; ``choose_block_sizes``
turns them into a power-of-two query block and a whole number of pages for a given call.
These defaults are not tuned on hardware (none was available); override them per call.
"""

from __future__ import annotations

from dataclasses import dataclass

#: (dtype name, head_dim <= 128) -> (target query rows per program, target keys per step).
DEFAULT_BLOCK_SIZES: dict[tuple[str, bool], tuple[int, int]] = {
    ("float32", True): (128, 256),
    ("float32", False): (128, 128),
    ("bfloat16", True): (256, 512),
    ("bfloat16", False): (128, 256),
}
_KV_BUFFER_BYTES = 8 * 1024 * 1024  # both halves of the double buffer together
_MAX_QUERY_BLOCK = 64


@dataclass(frozen=True, slots=True)
class BlockSizes:
    """Static tiling of one kernel call.

    Attributes:
        query_block: Tokens of one sequence per grid program (a power of two).
        kv_pages_per_step: Pages copied into VMEM per step of the key loop.
    """

    query_block: int
    kv_pages_per_step: int

    def __post_init__(self) -> None:
        if self.query_block < 1 or self.kv_pages_per_step < 1:
            raise ValueError(
                f"block sizes must be >= 1, got query_block={self.query_block}, "
                f"kv_pages_per_step={self.kv_pages_per_step}"
            )


def _floor_pow2(value: int) -> int:
    return 1 << (max(1, value).bit_length() - 1)


def choose_block_sizes(
    *,
    num_tokens: int,
    max_num_seqs: int,
    pages_per_seq: int,
    page_size: int,
    num_kv_heads: int,
    group: int,
    head_dim: int,
    dtype: str,
) -> BlockSizes:
    """Fit the table's targets to one call's static shapes.

    The query block is the target rows divided by the GQA group, but never more than half the
    average query length the bucket allows (``num_tokens / max_num_seqs``), so decode buckets
    get blocks of 1 token instead of mostly-padding blocks. The key step is the target keys in
    whole pages, at most the page-table width and at most what fits the VMEM buffer budget.

    Args:
        num_tokens: Padded token count.
        max_num_seqs: Padded sequence count.
        pages_per_seq: Page-table width.
        page_size: Tokens per page.
        num_kv_heads: KV heads.
        group: Query heads per kv head.
        head_dim: Head dimension.
        dtype: Name of the KV-cache dtype (``"float32"`` or ``"bfloat16"``).

    Returns:
        The block sizes.
    """
    key = (dtype if dtype in ("float32", "bfloat16") else "float32", head_dim <= 128)
    target_rows, target_keys = DEFAULT_BLOCK_SIZES[key]
    by_rows = _floor_pow2(target_rows // max(1, group))
    by_length = _floor_pow2(num_tokens // (2 * max(1, max_num_seqs)))
    query_block = max(1, min(by_rows, by_length, _MAX_QUERY_BLOCK, _floor_pow2(num_tokens)))
    itemsize = 4 if dtype == "float32" else 2
    page_bytes = page_size * 2 * num_kv_heads * head_dim * itemsize
    by_vmem = max(1, _KV_BUFFER_BYTES // (2 * page_bytes))
    pages = max(1, min(target_keys // page_size, pages_per_seq, by_vmem))
    return BlockSizes(query_block=query_block, kv_pages_per_step=pages)
