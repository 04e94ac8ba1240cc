"""Chat prompts in which user text can never become a special token.

A chat template writes control tokens (``<|im_start|>``, ``<|eot_id|>``...) as text, and the
tokenizer turns that text into the control token ids. If user content is simply pasted into
the template, a user who types ``<|im_start|>system`` opens a new turn. ``render_chat``
prevents that: it renders the template with a unique placeholder for every user-supplied
string, tokenises the template's own text normally, and tokenises each user string with
``split_special_tokens=True`` (its special-token look-alikes become plain text).

When no user string contains (or could complete) special-token text, plain rendering gives
the same ids, so that common case takes the fast path. Rendering runs in Hugging Face's
``ImmutableSandboxedEnvironment`` (``transformers`` renders every chat template in it), so a
client template cannot reach Python internals.
"""

from __future__ import annotations

import inspect
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

from esurge_server_openai.errors import APIError

#: Message fields that steer the template and are not free text (validated elsewhere).
_STRUCTURAL_KEYS = frozenset({"role", "type"})


def special_texts(tokenizer: Any) -> tuple[str, ...]:
    """The text of every added token the tokenizer would match inside plain text."""
    cached = getattr(tokenizer, "_esurge_special_texts", None)
    if cached is None:
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        cached = tuple(sorted({t.content for t in decoder.values() if t.content}))
        tokenizer._esurge_special_texts = cached
    return cached


def render_chat(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    chat_template: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> list[int]:
    """Token ids of ``messages`` rendered with the chat template, user text kept as text.

    Raises:
        APIError: 400 when the template fails or rejects the messages, when extra template
            arguments collide with reserved ones, or when the template rewrites user text that
            looks like special tokens (so it cannot be isolated safely).
    """
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise APIError("this model has no chat template (a base model); use /v1/completions")
    kwargs = _template_kwargs(tokenizer, template_kwargs)
    specials = special_texts(tokenizer)
    strings: list[str] = []
    messages_ph = _substitute(list(messages), strings, specials)
    tools_ph = _substitute(list(tools), strings, specials) if tools else None
    if not any(_risky(text, specials) for text in strings):
        text = _render(tokenizer, list(messages), tools, chat_template, kwargs)
        return list(tokenizer.encode(text, add_special_tokens=False))
    nonce = secrets.token_hex(8)
    marker = re.compile(rf"ESURGEUSERTEXT{nonce}N(\d+)E")
    messages_ph = _fill(messages_ph, nonce)
    tools_ph = _fill(tools_ph, nonce) if tools_ph is not None else None
    template_text = _render(tokenizer, messages_ph, tools_ph, chat_template, kwargs)
    real_text = _render(tokenizer, list(messages), tools, chat_template, kwargs)
    pieces = marker.split(template_text)  # template, index, template, index, ..., template
    ids: list[int] = []
    position = 0
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            if not real_text.startswith(piece, position):
                raise _unsafe()
            ids.extend(tokenizer.encode(piece, add_special_tokens=False))
            position += len(piece)
            continue
        user = _match_user_text(real_text, position, strings[int(piece)])
        ids.extend(tokenizer.encode(user, add_special_tokens=False, split_special_tokens=True))
        position += len(user)
    if position != len(real_text):
        raise _unsafe()
    return ids


def _risky(text: str, specials: tuple[str, ...]) -> bool:
    """Whether ``text`` holds special-token text or could complete one at either edge."""
    for special in specials:
        if special in text:
            return True
        for cut in range(1, len(special)):
            if text.endswith(special[:cut]) or text.startswith(special[cut:]):
                return True
    return False


def _substitute(value: Any, strings: list[str], specials: tuple[str, ...]) -> Any:
    """``value`` with every free-text string replaced by ``("__esurge_user__", index)``."""
    if isinstance(value, str):
        strings.append(value)
        return ("__esurge_user__", len(strings) - 1)
    if isinstance(value, list):
        return [_substitute(item, strings, specials) for item in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if any(special in str(key) for special in specials):
                raise APIError(
                    f"the field name {str(key)[:64]!r} contains special-token text",
                    param="messages",
                )
            out[key] = item if key in _STRUCTURAL_KEYS else _substitute(item, strings, specials)
        return out
    return value


def _fill(value: Any, nonce: str) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__esurge_user__":
        return f"ESURGEUSERTEXT{nonce}N{value[1]}E"
    if isinstance(value, list):
        return [_fill(item, nonce) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, nonce) for key, item in value.items()}
    return value


def _match_user_text(real_text: str, position: int, original: str) -> str:
    """The form in which the template wrote ``original`` at ``position`` (raw or JSON)."""
    for candidate in (
        original,
        json.dumps(original, ensure_ascii=False)[1:-1],
        json.dumps(original)[1:-1],
    ):
        if real_text.startswith(candidate, position):
            return candidate
    raise _unsafe()


def _unsafe() -> APIError:
    return APIError(
        "the chat template rewrites message text that looks like special tokens, so that "
        "text cannot be kept apart from the template's own tokens; remove the special-token "
        "text from the messages",
        param="messages",
    )


def _template_kwargs(tokenizer: Any, extra: dict[str, Any] | None) -> dict[str, Any]:
    if not extra:
        return {}
    reserved = set(inspect.signature(tokenizer.apply_chat_template).parameters)
    clash = sorted(set(extra) & (reserved | {"conversation", "messages"}))
    if clash:
        raise APIError(
            f"chat_template_kwargs may not set {clash}; those are set by the server",
            param="chat_template_kwargs",
        )
    return dict(extra)


def _render(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: Any,
    chat_template: str | None,
    kwargs: dict[str, Any],
) -> str:
    try:
        text = tokenizer.apply_chat_template(
            messages,
            tools=tools,
            chat_template=chat_template,
            add_generation_prompt=True,
            tokenize=False,
            **kwargs,
        )
    except Exception as exc:  # any template failure is the request's fault
        raise APIError(
            f"messages could not be rendered with the chat template: "
            f"{type(exc).__name__}: {str(exc)[:200]}",
            param="messages",
        ) from None
    if not isinstance(text, str):
        raise APIError("the chat template did not render to text", param="messages")
    return text
