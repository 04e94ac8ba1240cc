"""Parsing a request body into its pydantic model: every malformed body is a 400.

Beyond ``json.loads`` it refuses bodies nested deeper than a limit (the C parser would
otherwise recurse until ``RecursionError``), strings holding NUL characters or lone UTF-16
surrogates (which cannot be encoded as UTF-8 for the tokenizer), and non-object bodies.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from esurge_server_openai.errors import APIError, validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_body(raw: bytes, model: type[ModelT], max_depth: int) -> ModelT:
    """``raw`` as ``model``; raises a 400 ``APIError`` naming the problem (and field)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise APIError(f"the request body is nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(f"the request body must be a JSON object, got {type(data).__name__}")
    check_values(data, max_depth)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_values(data: dict[str, Any], max_depth: int) -> None:
    """Depth and string checks over the whole document, without recursion."""
    stack: list[tuple[Any, int, str | None]] = [(value, 2, key) for key, value in data.items()]
    for key in data:
        _check_string(key, key)
    while stack:
        value, depth, field = stack.pop()
        if isinstance(value, str):
            _check_string(value, field)
        elif isinstance(value, dict | list):
            if depth > max_depth:
                raise APIError(
                    f"{field}: the request body is nested deeper than {max_depth} levels",
                    param=field,
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_string(key, field)
                stack.append((item, depth + 1, field))


def _check_string(text: str, field: str | None) -> None:
    if "\x00" in text:
        raise APIError(f"{field}: strings may not contain NUL characters", param=field)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(
            f"{field}: a string is not valid Unicode (a lone surrogate such as \\ud800)",
            param=field,
        ) from None
