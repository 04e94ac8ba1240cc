"""Specification of `load_tokenizer`: GGUF files and Hugging Face folders, offline, cached."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from esurge_core.weights.errors import CheckpointNotFoundError, WeightLoadError
from esurge_core.weights.tokenizer_loader import load_tokenizer

TEXTS = [
    "Hello world! Ünïcödé 123",
    "  leading spaces\n\ttabs and\r\nnewlines",
    "日本語のテキスト 🙂 emoji",
    "<|im_start|>user\nhi<|im_end|>",
]
CHAT = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Keep converted tokenizers out of the user's cache; one cache per test module."""
    monkeypatch.setenv("ESURGE_CACHE", str(tmp_path_factory.getbasetemp() / "tokenizer-cache"))


@pytest.fixture(scope="module")
def smollm2_reference(smollm2_gguf):
    """transformers' own tokenizer built from the SmolLM2 GGUF."""
    return AutoTokenizer.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, local_files_only=True
    )


def _assert_same_behaviour(ours, reference) -> None:
    for text in TEXTS:
        ids = reference.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == reference.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(
            ids, skip_special_tokens=True
        )
    assert (ours.bos_token_id, ours.eos_token_id) == (
        reference.bos_token_id,
        reference.eos_token_id,
    )


def test_gguf_tokenizer_matches_transformers(smollm2_gguf, smollm2_reference):
    tokenizer = load_tokenizer(smollm2_gguf)
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    _assert_same_behaviour(tokenizer, smollm2_reference)


def test_cached_gguf_tokenizer_matches_transformers(smollm2_gguf, smollm2_reference):
    load_tokenizer(smollm2_gguf)  # converts and fills the cache (no-op if already there)
    _assert_same_behaviour(load_tokenizer(smollm2_gguf), smollm2_reference)


def test_smollm2_chat_template_comes_with_the_tokenizer(smollm2_gguf, smollm2_reference):
    tokenizer = load_tokenizer(smollm2_gguf)
    prompt = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert prompt == smollm2_reference.apply_chat_template(
        CHAT, tokenize=False, add_generation_prompt=True
    )


def test_folder_tokenizer_loads_with_its_chat_template(tmp_path, smollm2_reference):
    smollm2_reference.save_pretrained(str(tmp_path))
    tokenizer = load_tokenizer(tmp_path)
    _assert_same_behaviour(tokenizer, smollm2_reference)
    assert tokenizer.chat_template == smollm2_reference.chat_template


def test_missing_source_is_reported(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "absent.gguf")


def test_folder_without_tokenizer_json_is_reported(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)


def test_file_that_is_not_gguf_is_reported(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"not a gguf file")
    with pytest.raises(WeightLoadError, match="neither a folder nor a GGUF file"):
        load_tokenizer(path)


@pytest.mark.slow
def test_gemma3_base_tokenizer_has_no_chat_template_and_adds_bos(gemma3_gguf):
    converted = load_tokenizer(gemma3_gguf)  # converts the GGUF vocabulary and caches it
    assert converted.chat_template is None
    assert converted.encode("hi")[0] == converted.bos_token_id == 2
    reloaded = load_tokenizer(gemma3_gguf)  # from the cache
    for text in TEXTS:
        assert reloaded.encode(text) == converted.encode(text), text
