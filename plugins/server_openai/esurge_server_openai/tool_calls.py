"""Tool-call parsers: model output -> OpenAI ``tool_calls``, chosen per model by name.

Parsers are components of the ``esurge_register_tool_parsers`` hook (this plugin registers
``hermes`` and ``json``; a third party adds its own the same way) and the server picks one with
``--tool-call-parser``. A parser says where a tool call starts (so streaming can hold the rest
back) and parses the whole text at the end.

* ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks, as Qwen,
  Hermes and SmolLM2 chat templates ask for; text before the first block is the content.
* ``json``: the whole answer is one JSON object ``{"name": ..., "arguments": ...}`` or a list
  of them (models prompted to "answer with JSON"); anything else is plain content.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class ParsedToolCalls:
    """The content left after removing the tool calls, and the calls found."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class ToolCallParser(Protocol):
    """What the server needs of a tool-call parser."""

    name: str

    def find_start(self, text: str, position: int) -> int:
        """Index >= ``position`` where a tool call starts in ``text``, or -1."""
        ...

    def held_suffix(self, text: str) -> int:
        """How many trailing characters might begin a tool call (hold them back)."""
        ...

    def parse(self, text: str) -> ParsedToolCalls:
        """Every well-formed call of ``text``; with none, ``text`` is the content."""
        ...


def _openai_call(payload: Any) -> dict[str, Any] | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return None
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": payload["name"], "arguments": arguments},
    }


class HermesToolParser:
    """``<tool_call>{json}</tool_call>`` blocks."""

    name = "hermes"
    open_tag = "<tool_call>"
    _block = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

    def find_start(self, text: str, position: int) -> int:
        """The next ``<tool_call>``."""
        return text.find(self.open_tag, position)

    def held_suffix(self, text: str) -> int:
        """The longest suffix that is a proper prefix of ``<tool_call>``."""
        for size in range(min(len(self.open_tag) - 1, len(text)), 0, -1):
            if self.open_tag.startswith(text[-size:]):
                return size
        return 0

    def parse(self, text: str) -> ParsedToolCalls:
        """Calls from every well-formed block; content is the text before the first."""
        start = text.find(self.open_tag)
        if start < 0:
            return ParsedToolCalls(text)
        calls = []
        for match in self._block.finditer(text, start):
            try:
                call = _openai_call(json.loads(match.group(1)))
            except ValueError:
                continue
            if call is not None:
                calls.append(call)
        if not calls:
            return ParsedToolCalls(text)
        return ParsedToolCalls(text[:start].strip() or None, calls)


class JsonToolParser:
    """The whole answer is a JSON call object or a list of them."""

    name = "json"

    def find_start(self, text: str, position: int) -> int:
        """A call can only start the answer: at its first non-space character."""
        stripped = len(text) - len(text.lstrip())
        if stripped >= position and text[stripped : stripped + 1] in {"{", "["}:
            return stripped
        return -1

    def held_suffix(self, text: str) -> int:
        """Leading whitespace is held until the first real character decides."""
        return len(text) if not text.strip() else 0

    def parse(self, text: str) -> ParsedToolCalls:
        """Calls when the whole text is a call object or a list of call objects."""
        try:
            payload = json.loads(text)
        except ValueError:
            return ParsedToolCalls(text)
        items = payload if isinstance(payload, list) else [payload]
        calls = [_openai_call(item) for item in items]
        if not calls or any(call is None for call in calls):
            return ParsedToolCalls(text)
        return ParsedToolCalls(None, calls)


class StreamingToolCallFilter:
    """Passes streamed content through until a tool call starts, then holds the rest back
    for the parser at the end (a text that might start a call is held too)."""

    def __init__(self, parser: ToolCallParser) -> None:
        self.parser = parser
        self.text = ""
        self._emitted = 0
        self._in_call = False

    def feed(self, delta: str) -> str:
        """Add ``delta``; return the content that can be sent now."""
        self.text += delta
        if self._in_call:
            return ""
        start = self.parser.find_start(self.text, self._emitted)
        if start >= 0:
            self._in_call = True
            out = self.text[self._emitted : start]
            self._emitted = start
            return out
        safe = max(len(self.text) - self.parser.held_suffix(self.text), self._emitted)
        out = self.text[self._emitted : safe]
        self._emitted = safe
        return out

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """At the end: content not yet sent, and the tool calls found."""
        parsed = self.parser.parse(self.text)
        if not parsed.tool_calls:
            rest = self.text[self._emitted :]
            self._emitted = len(self.text)
            return rest, []
        return "", parsed.tool_calls
