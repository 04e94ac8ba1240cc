"""Stable content hashes of full KV-cache pages, chained from the first page.

`h_i = xxh3_128(h_{i-1} || int32 little-endian bytes of page i's token ids)`, where `h_{-1}`
is the root hash of the request's extra keys (adapter id and tenant `cache_salt`). Page i's
hash therefore names every token of positions [0, (i + 1) * page_size) and the extra keys, so
two requests share a page only when their whole prefix and their tenant match. The encoding
is canonical (fixed-length parent, fixed-width tokens, length-prefixed extra keys), so the
hash is the same in every process and on every run; Python's salted `hash()` is never used.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence

import numpy as np
import xxhash

#: Domain separator of the root hash; bump the version when the encoding changes.
HASH_DOMAIN = b"esurge/kv-cache/page-hash/v1"
#: Length of every page hash in bytes.
HASH_BYTES = 16

_hash = xxhash.xxh3_128_digest
_SWAP_BYTES = sys.byteorder != "little"
if array("i").itemsize != 4:  # pragma: no cover - every supported platform has a 4-byte int
    raise ImportError("esurge_core.kv_cache needs a platform whose C int is 4 bytes.")

TokenIds = Sequence[int] | np.ndarray


def encode_token_ids(token_ids: TokenIds) -> bytes:
    """Canonical bytes of token ids: int32, little endian, no header.

    Raises:
        OverflowError: a token id does not fit in int32.
    """
    if isinstance(token_ids, np.ndarray):
        return np.ascontiguousarray(token_ids, dtype="<i4").tobytes()
    packed = array("i", token_ids)
    if _SWAP_BYTES:  # pragma: no cover - big-endian hosts only
        packed.byteswap()
    return packed.tobytes()


def _encode_extra_key(tag: bytes, value: int | str | None) -> bytes:
    if value is None:
        return tag + b"-"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            f"prefix-cache extra keys must be int, str or None; got {type(value).__name__} "
            f"{value!r}."
        )
    kind = b"i" if isinstance(value, int) else b"s"
    data = str(value).encode("utf-8")
    return tag + kind + len(data).to_bytes(4, "little") + data


def root_page_hash(cache_salt: str | None = None, lora_id: int | str | None = None) -> bytes:
    """The parent hash of a request's first page, binding its extra keys into the chain.

    Args:
        cache_salt: Per-tenant salt (the server sets one per API key); None for no salt.
        lora_id: Adapter id, None for the base model.
    """
    return _hash(
        HASH_DOMAIN + _encode_extra_key(b"L", lora_id) + _encode_extra_key(b"S", cache_salt)
    )


def hash_bytes(data: bytes) -> bytes:
    """The 16-byte hash of already encoded bytes (parent hash + encoded tokens)."""
    return _hash(data)


def page_hash(parent_hash: bytes, token_ids: TokenIds) -> bytes:
    """Hash of one full page given the hash of the page before it (or the root hash)."""
    return _hash(parent_hash + encode_token_ids(token_ids))


def page_hash_chain(
    token_ids: TokenIds, page_size: int, num_pages: int, root_hash: bytes
) -> list[bytes]:
    """Hashes of the first `num_pages` full pages of `token_ids`."""
    hashes: list[bytes] = []
    parent = root_hash
    for index in range(num_pages):
        start = index * page_size
        parent = page_hash(parent, token_ids[start : start + page_size])
        hashes.append(parent)
    return hashes
