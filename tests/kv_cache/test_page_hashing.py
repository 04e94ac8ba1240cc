"""Stable page hashes: chained, canonical, salted per tenant and adapter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from esurge_core.kv_cache.page_hashing import (
    HASH_BYTES,
    encode_token_ids,
    page_hash,
    page_hash_chain,
    root_page_hash,
)


def test_tokens_encode_as_little_endian_int32():
    assert encode_token_ids([1, 256]) == b"\x01\x00\x00\x00\x00\x01\x00\x00"


def test_list_and_array_tokens_hash_alike():
    root = root_page_hash()
    assert page_hash(root, [3, 1, 4, 1]) == page_hash(root, np.array([3, 1, 4, 1], np.int64))


def test_hash_is_the_same_in_another_process():
    code = (
        "from esurge_core.kv_cache.page_hashing import page_hash, root_page_hash;"
        "print(page_hash(root_page_hash('tenant', 3), [1, 2, 3, 4]).hex())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": ":".join(sys.path)},
    )
    assert other.stdout.strip() == page_hash(root_page_hash("tenant", 3), [1, 2, 3, 4]).hex()


def test_hash_has_sixteen_bytes():
    assert len(page_hash(root_page_hash(), [0] * 16)) == HASH_BYTES


def test_page_hash_depends_on_the_parent():
    assert page_hash(root_page_hash(), [1, 2]) != page_hash(
        page_hash(root_page_hash(), [0, 0]), [1, 2]
    )


def test_cache_salt_changes_the_root():
    assert root_page_hash(cache_salt="a") != root_page_hash(cache_salt="b")
    assert root_page_hash(cache_salt="a") != root_page_hash()


def test_lora_id_changes_the_root():
    assert root_page_hash(lora_id=1) != root_page_hash(lora_id=2)
    assert root_page_hash(lora_id=1) != root_page_hash(lora_id="1")


def test_salt_and_lora_cannot_be_swapped():
    assert root_page_hash(cache_salt="x", lora_id=None) != root_page_hash(
        cache_salt=None, lora_id="x"
    )


def test_extra_keys_of_unsupported_type_are_refused():
    with pytest.raises(TypeError, match="extra keys"):
        root_page_hash(cache_salt=1.5)  # type: ignore[arg-type]


def test_chain_hashes_each_page_on_top_of_the_previous():
    root = root_page_hash()
    chain = page_hash_chain(list(range(8)), page_size=4, num_pages=2, root_hash=root)
    assert chain == [page_hash(root, [0, 1, 2, 3]), page_hash(chain[0], [4, 5, 6, 7])]
