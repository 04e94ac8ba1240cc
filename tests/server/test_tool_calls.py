"""Tool calls: the hermes and json parsers, the streaming filter, and the chat route."""

from __future__ import annotations

import json
from types import SimpleNamespace

from esurge_server_openai import eSurgeApiServer
from esurge_server_openai.tool_calls import (
    HermesToolParser,
    JsonToolParser,
    StreamingToolCallFilter,
)
from fastapi.testclient import TestClient

from esurge_core.engine.outputs import CompletionOutput, RequestOutput

HERMES = HermesToolParser()
parse_tool_calls = HERMES.parse

CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def test_text_without_a_tool_call_is_all_content():
    parsed = parse_tool_calls("just words")
    assert parsed.content == "just words" and parsed.tool_calls == []


def test_tool_call_block_becomes_an_openai_tool_call():
    parsed = parse_tool_calls("Let me check. " + CALL)
    assert parsed.content == "Let me check."
    (call,) = parsed.tool_calls
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_malformed_tool_call_json_stays_content():
    text = "<tool_call>{not json}</tool_call>"
    assert parse_tool_calls(text).content == text


def test_streaming_filter_holds_back_a_partial_tag_and_the_call():
    parser = StreamingToolCallFilter(HERMES)
    sent = "".join(parser.feed(piece) for piece in ["Hi <tool", "_call>", CALL[11:]])
    rest, calls = parser.finish()
    assert sent + rest == "Hi "
    assert calls[0]["function"]["name"] == "get_weather"


def test_streaming_filter_releases_a_tag_prefix_that_was_not_a_call():
    parser = StreamingToolCallFilter(HERMES)
    sent = parser.feed("a <tool") + parser.feed("box> b")
    rest, calls = parser.finish()
    assert sent + rest == "a <toolbox> b" and calls == []


class ScriptedEngine:
    """An engine whose every request answers ``pieces`` one step at a time."""

    model_name = "scripted"
    max_model_len = 256
    is_alive = True
    model = SimpleNamespace(vocab_size=1000)
    tokenizer = SimpleNamespace(
        decode=lambda ids, **_: "x",
        chat_template="scripted",
        added_tokens_decoder={},
        apply_chat_template=lambda messages, **_: "rendered",
        encode=lambda text, **_: [1, 2, 3],
    )
    scheduler = SimpleNamespace(max_num_seqs=8, running=[])
    num_steps = 0
    last_step_time = 0.0

    def __init__(self, pieces: list[str]):
        self.pieces = pieces

    def has_unfinished_requests(self):
        return False

    def abort(self, request_id):
        pass

    async def async_stream(self, prompt, params, **kwargs):
        text = ""
        for step, piece in enumerate(self.pieces):
            text += piece
            last = step == len(self.pieces) - 1
            choice = CompletionOutput(
                index=0,
                text=text,
                token_ids=list(range(step + 1)),
                delta_text=piece,
                finish_reason="stop" if last else None,
            )
            yield RequestOutput("r", None, [1, 2, 3], [choice], finished=last)


def chat(pieces, **extra):
    client = TestClient(eSurgeApiServer(ScriptedEngine(pieces)).app)
    body = {"messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS, **extra}
    return client.post("/v1/chat/completions", json=body)


def test_chat_answer_with_a_tool_call_has_tool_calls_and_finish_reason():
    choice = chat(["Checking. ", CALL]).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_tool_choice_none_leaves_the_text_alone():
    choice = chat(["Checking. ", CALL], tool_choice="none").json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert CALL in choice["message"]["content"]


def test_streamed_tool_call_arrives_in_the_final_delta():
    response = chat(["Checking. <tool_", CALL[6:]], stream=True)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == "Checking. "
    final = chunks[-1]["choices"][0]
    assert final["finish_reason"] == "tool_calls"
    assert final["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert final["delta"]["tool_calls"][0]["index"] == 0


def test_json_parser_reads_a_whole_answer_call_object_or_list():
    parser = JsonToolParser()
    single = parser.parse('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert single.content is None
    assert single.tool_calls[0]["function"]["name"] == "get_weather"
    assert json.loads(single.tool_calls[0]["function"]["arguments"]) == {"city": "Paris"}
    several = parser.parse('[{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{}"}]')
    assert [c["function"]["name"] for c in several.tool_calls] == ["a", "b"]


def test_json_parser_leaves_prose_and_other_json_as_content():
    parser = JsonToolParser()
    assert parser.parse("The weather is fine.").tool_calls == []
    assert parser.parse('{"answer": 42}').content == '{"answer": 42}'


def test_streaming_with_the_json_parser_holds_a_leading_call_and_passes_prose():
    call = StreamingToolCallFilter(JsonToolParser())
    assert call.feed("  ") == ""
    assert call.feed('{"name": "f", ').strip() == ""  # at most the leading blanks
    assert call.feed('"arguments": {}}') == ""
    rest, calls = call.finish()
    assert rest == "" and calls[0]["function"]["name"] == "f"
    prose = StreamingToolCallFilter(JsonToolParser())
    assert prose.feed(" Hello") == " Hello"
    assert prose.feed(" world {x}") == " world {x}"


def test_tool_parsers_are_plugins_chosen_by_name():
    from esurge_core.components import ComponentKind
    from esurge_core.plugin_manager import PluginManager

    registry = PluginManager().registry
    assert {"hermes", "json"} <= set(registry.names(ComponentKind.TOOL_PARSER))
    assert registry.get(ComponentKind.TOOL_PARSER, "json").load() is JsonToolParser
