"""Block sizes of the Triton kernel: a small table of defaults, fitted to each call's shapes.

Triton needs power-of-two tile shapes and ``tl.dot`` operands of at least 16 x 16, so a
program's query rows (tokens x query heads of one kv head) are padded to a power of two
``>= 16``, and the key loop walks each page in tiles of the largest power of two that divides
the page size (``>= 16`` because page sizes are multiples of 16). The table holds how many
query rows one program targets; these defaults are not tuned on hardware (none was available).
"""

from __future__ import annotations

from dataclasses import dataclass

#: head_dim -> target query rows per program (bigger heads: fewer rows, same register budget).
DEFAULT_QUERY_ROWS: dict[int, int] = {16: 128, 32: 128, 64: 64, 128: 64, 256: 32}
MIN_DOT_SIZE = 16
_MAX_KEY_TILE = 64
_MAX_QUERY_BLOCK = 64


@dataclass(frozen=True, slots=True)
class BlockSizes:
    """Static tiling of one kernel call.

    Attributes:
        query_block: Tokens of one sequence per program in the prefill path (power of two).
        key_tile: Keys per step of the key loop (a power of two dividing the page size).
    """

    query_block: int
    key_tile: int

    def __post_init__(self) -> None:
        if self.query_block < 1 or self.key_tile < 1 or self.key_tile & (self.key_tile - 1):
            raise ValueError(
                f"query_block must be >= 1 and key_tile a power of two, got "
                f"query_block={self.query_block}, key_tile={self.key_tile}"
            )


def _floor_pow2(value: int) -> int:
    return 1 << (max(1, value).bit_length() - 1)


def padded_rows(rows: int) -> int:
    """Query rows of one program padded to a power of two of at least :data:`MIN_DOT_SIZE`."""
    return max(MIN_DOT_SIZE, 1 << (max(1, rows) - 1).bit_length())


def choose_block_sizes(
    *, num_tokens: int, max_num_seqs: int, page_size: int, group: int, head_dim: int
) -> BlockSizes:
    """Fit the table's targets to one call's static shapes.

    The query block is the target rows divided by the GQA group, at most half the average query
    length the bucket allows (``num_tokens / max_num_seqs``). The key tile is the largest
    power of two dividing ``page_size``, at most 64.
    """
    target_rows = DEFAULT_QUERY_ROWS.get(head_dim, 64)
    by_rows = _floor_pow2(target_rows // max(1, group))
    by_length = _floor_pow2(num_tokens // (2 * max(1, max_num_seqs)))
    query_block = max(1, min(by_rows, by_length, _MAX_QUERY_BLOCK, _floor_pow2(num_tokens)))
    key_tile = min(page_size & -page_size, _MAX_KEY_TILE)
    return BlockSizes(query_block=query_block, key_tile=key_tile)
