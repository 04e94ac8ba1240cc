"""Log-probabilities in the two OpenAI shapes (chat ``content`` entries, legacy arrays)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from esurge_core.engine.outputs import TokenLogprob


def token_text(tokenizer: Any, token_id: int) -> str:
    """The text one token stands for on its own."""
    return tokenizer.decode([token_id], skip_special_tokens=False)


def chat_logprobs(tokenizer: Any, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    content = []
    for entry in entries:
        text = token_text(tokenizer, entry.token_id)
        content.append(
            {
                "token": text,
                "logprob": entry.logprob,
                "bytes": list(text.encode("utf-8")),
                "top_logprobs": [
                    _chat_top(token_text(tokenizer, tid), lp) for tid, lp in entry.top
                ],
            }
        )
    return {"content": content}


def _chat_top(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def completion_logprobs(
    tokenizer: Any, entries: Sequence[TokenLogprob], text_offset: int
) -> tuple[dict[str, Any], int]:
    """A completion choice's ``logprobs`` (tokens, token_logprobs, top_logprobs,
    text_offset) starting at character ``text_offset``; also returns the offset after it."""
    tokens, values, tops, offsets = [], [], [], []
    for entry in entries:
        text = token_text(tokenizer, entry.token_id)
        tokens.append(text)
        values.append(entry.logprob)
        tops.append({token_text(tokenizer, tid): lp for tid, lp in entry.top})
        offsets.append(text_offset)
        text_offset += len(text)
    body = {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops}
    body["text_offset"] = offsets
    return body, text_offset
