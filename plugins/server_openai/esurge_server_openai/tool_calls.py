"""Hermes-style tool calls: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

Qwen, Hermes and SmolLM2 chat templates ask the model to answer tool use this way. The
parser turns the blocks into OpenAI ``tool_calls``; the text before the first block stays
the message content.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL_OPEN = "<tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass(slots=True)
class ParsedToolCalls:
    """The content left after removing the tool-call blocks, and the calls found."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def parse_tool_calls(text: str) -> ParsedToolCalls:
    """Extract every well-formed tool call of ``text``; with none, ``text`` is the content."""
    start = text.find(TOOL_CALL_OPEN)
    if start < 0:
        return ParsedToolCalls(text)
    calls = []
    for match in _BLOCK.finditer(text, start):
        try:
            payload = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            continue
        arguments = payload.get("arguments", payload.get("parameters", {}))
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": payload["name"], "arguments": arguments},
            }
        )
    if not calls:
        return ParsedToolCalls(text)
    content = text[:start].strip()
    return ParsedToolCalls(content or None, calls)


class StreamingToolCallFilter:
    """Passes streamed content through until a ``<tool_call>`` starts, then holds the rest
    back for :func:`parse_tool_calls` at the end (a partial ``<tool_call`` is held too)."""

    def __init__(self) -> None:
        self.text = ""
        self._emitted = 0
        self._in_call = False

    def feed(self, delta: str) -> str:
        """Add ``delta``; return the content that can be sent now."""
        self.text += delta
        if self._in_call:
            return ""
        start = self.text.find(TOOL_CALL_OPEN, self._emitted)
        if start >= 0:
            self._in_call = True
            out = self.text[self._emitted : start]
            self._emitted = start
            return out
        safe = len(self.text)
        for size in range(min(len(TOOL_CALL_OPEN) - 1, len(self.text)), 0, -1):
            if TOOL_CALL_OPEN.startswith(self.text[-size:]):
                safe = len(self.text) - size
                break
        safe = max(safe, self._emitted)
        out = self.text[self._emitted : safe]
        self._emitted = safe
        return out

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """At the end: content not yet sent, and the tool calls found."""
        parsed = parse_tool_calls(self.text)
        if not parsed.tool_calls:
            rest = self.text[self._emitted :]
            self._emitted = len(self.text)
            return rest, []
        return "", parsed.tool_calls
