"""Incremental detokenisation: new token ids in, new text out, O(new tokens) per step.

Each request decodes a short sliding window of ids rather than its whole output: the text
of ``ids[prefix_offset:read_offset]`` (already emitted) is compared with the text of
``ids[prefix_offset:]``; the difference is the delta (vLLM's prefix/read-offset method,
the same one ``tokenizers.decoders.DecodeStream`` implements in Rust). Decoding with a few
tokens of left context keeps word-initial spaces right for SentencePiece-style decoders.
A delta ending in U+FFFD means a multi-byte character is split across tokens: nothing is
emitted and the ids wait for the next step, so streamed text never carries a broken
character. :meth:`IncrementalDetokenizer.flush` releases what is left when the request ends.

When the tokenizer has a Rust ``tokenizers.Tokenizer`` backend (every Hugging Face "fast"
tokenizer), the window step runs in ``DecodeStream``; otherwise (or if ``DecodeStream``
raises on an odd sequence) the same method runs in Python over ``tokenizer.decode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

#: Prompt tokens used as left context for the first output tokens (vLLM uses 5 too).
PROMPT_CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


class SupportsDecode(Protocol):
    """Any tokenizer with ``decode(ids, skip_special_tokens=...)`` (HF, ``tokenizers``)."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


def rust_backend(tokenizer: Any) -> Tokenizer | None:
    """The ``tokenizers.Tokenizer`` behind ``tokenizer`` (itself, or an HF fast tokenizer's)."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend if isinstance(backend, Tokenizer) else None


class IncrementalDetokenizer:
    """Turns one request's generated token ids into streamed text deltas.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` or a Hugging Face tokenizer.
        prompt_token_ids: the request's prompt; its last few ids give left context.
        skip_special_tokens: drop special tokens (EOS, chat markers) from the text.
        use_decode_stream: use the Rust ``DecodeStream`` when possible (default True).
    """

    __slots__ = ("_backend", "_ids", "_prefix_offset", "_read_offset", "_skip", "_stream", "_tok")

    def __init__(
        self,
        tokenizer: SupportsDecode,
        prompt_token_ids: Sequence[int] = (),
        *,
        skip_special_tokens: bool = True,
        use_decode_stream: bool = True,
    ) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        context = [int(t) for t in prompt_token_ids[-PROMPT_CONTEXT_TOKENS:]]
        self._ids: list[int] = context
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._backend = rust_backend(tokenizer) if use_decode_stream else None
        self._stream: DecodeStream | None = None
        if self._backend is not None:
            self._stream = DecodeStream(ids=context, skip_special_tokens=skip_special_tokens)

    def add_tokens(self, token_ids: Sequence[int]) -> str:
        """Append newly generated ids; return the text they complete (may be empty)."""
        if not token_ids:
            return ""
        new_ids = [int(t) for t in token_ids]
        self._ids.extend(new_ids)
        if self._stream is not None:
            try:
                chunk = self._stream.step(self._backend, new_ids)
            except Exception:
                # DecodeStream rejects some sequences (e.g. a decoder that rewrites the
                # window's prefix); the Python method below handles them, from here on.
                self._stream = None
            else:
                if chunk is None:
                    return ""
                self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
                return chunk
        return self._window_delta(allow_partial=False)

    def flush(self) -> str:
        """Text still held back (an incomplete character) when the request finishes."""
        delta = self._window_delta(allow_partial=True)
        self._stream = None
        return delta

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def _window_delta(self, *, allow_partial: bool) -> str:
        if self._read_offset >= len(self._ids):
            return ""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) <= len(prefix) and not allow_partial:
            return ""
        if full.endswith(_REPLACEMENT) and not allow_partial:
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return full[len(prefix) :]
