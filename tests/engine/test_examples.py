"""The examples in examples/ run against a real engine."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from esurge_core.sampling.params import SamplingParams

from .prompts import RAW_PROMPTS

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def engine(make_engine):
    return make_engine(page_size=16, max_num_seqs=8, max_model_len=512)


def test_streaming_chat_writes_the_reply_as_it_streams(engine):
    example = load_example("streaming_chat")
    pieces: list[str] = []
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    params = SamplingParams(temperature=0, max_tokens=16)
    reply = example.stream_reply(engine, messages, params, write=pieces.append)
    assert len(pieces) > 1
    assert "".join(pieces) == reply
    assert reply == engine.chat(messages, params).outputs[0].text


def test_async_batch_service_drives_add_request_and_step(make_engine):
    example = load_example("async_batch_service")
    engine = make_engine(page_size=16, max_num_seqs=8, max_model_len=512)  # no background loop
    params = SamplingParams(temperature=0, max_tokens=8)

    async def main():
        service = example.BatchService(engine)
        return await asyncio.gather(*(service.submit(p, params) for p in RAW_PROMPTS[:4]))

    outputs = asyncio.run(main())
    assert [o.prompt for o in outputs] == RAW_PROMPTS[:4]
    expected = engine.generate(RAW_PROMPTS[:4], params)
    assert [o.outputs[0].text for o in outputs] == [o.outputs[0].text for o in expected]
