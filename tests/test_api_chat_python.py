"""Mistral API chat through llm's Python API, sync and async, against the fake Mistral server
(issue 2). Every request body the fake receives is validated against ``ChatCompletionRequest``."""

from __future__ import annotations

import asyncio
import re
import time

import llm
import pytest

from _llm_mistral_suite.chat import AsyncMistralChat
from _llm_mistral_suite.errors import MistralSuiteError, StreamCutError
from conftest import SENTINEL_KEY, bodies
from fake_mistral import SSEReply, chat_stream_events, error_reply

WIRE_ID = re.compile(r"[A-Za-z0-9]{9}")


@pytest.fixture
def api(fake, monkeypatch):
    """The plugin pointed at the fake server, with the sentinel key."""
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    return fake


def llm_version() -> str:
    """The installed version of llm."""
    return "0.36-test"


def test_sync_conversation_usage_and_resolved_model(api):
    model = llm.get_model("mistral-large")
    conversation = model.conversation()
    first = conversation.prompt("hello")
    assert first.text() == "echo: hello"
    assert first.resolved_model == "mistral-large-2512"  # the fake answers with the dated name
    usage = first.usage()
    assert usage.input > 0 and usage.output > 0
    second = conversation.prompt("again", stream=False)
    assert second.text() == "echo: again"
    assert bodies(api)[1]["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "echo: hello"},
        {"role": "user", "content": "again"},
    ]
    assert "stream" not in bodies(api)[1]


def test_sync_reset_mid_stream_is_an_error_without_retry(api):
    api.queue(SSEReply(chat_stream_events(["Hello", " wor", "ld"]), reset=True, done=False))
    response = llm.get_model("mistral-large").prompt("hi")
    with pytest.raises(StreamCutError, match="dropped the connection"):
        response.text()
    assert len(api.requests) == 1


@pytest.mark.asyncio
async def test_async_stream_no_stream_and_usage(api):
    model = llm.get_async_model("mistral-large")
    assert isinstance(model, AsyncMistralChat)
    response = model.prompt("hello async")
    chunks = [chunk async for chunk in response]
    assert "".join(chunks) == "echo: hello async" and len(chunks) > 1  # really streamed
    assert (await response.usage()).output > 0
    plain = model.prompt("plain", stream=False, temperature=0.3)
    assert await plain.text() == "echo: plain"
    streamed, not_streamed = bodies(api)
    assert streamed["stream"] is True
    assert "stream" not in not_streamed and not_streamed["temperature"] == 0.3


@pytest.mark.asyncio
async def test_async_tool_chain_replays_ids(api):
    model = llm.get_async_model("mistral-small")
    chain = model.chain("Use the tool please", tools=[llm_version])
    assert await chain.text() == "tool said: 0.36-test"
    _, assistant, tool = bodies(api)[1]["messages"]
    [call] = assistant["tool_calls"]
    assert WIRE_ID.fullmatch(call["id"]) and tool["tool_call_id"] == call["id"] and tool["name"] == "llm_version"


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [True, False])
async def test_async_retries(api, stream):
    api.queue(error_reply(429, "Requests rate limit exceeded", retry_after=0.3), error_reply(503, "Unavailable"))
    started = time.monotonic()
    response = llm.get_async_model("mistral-large").prompt("patience", stream=stream)
    assert await response.text() == "echo: patience"
    assert time.monotonic() - started >= 0.3  # Retry-After honoured on the async path too
    assert len(api.requests) == 3


@pytest.mark.asyncio
async def test_async_errors_are_clear(api):
    api.queue(SSEReply(chat_stream_events(["Hel", "lo", "!"]), cut_after=2))
    model = llm.get_async_model("mistral-large")
    with pytest.raises(StreamCutError, match="ended before it was finished"):
        await model.prompt("cut me").text()
    api.queue(error_reply(401, "Unauthorized"))
    with pytest.raises(MistralSuiteError, match="llm keys set mistral"):
        await model.prompt("who am I").text()
    assert len(api.requests) == 2


def test_async_works_across_event_loops(api):
    """Each asyncio.run() gets a client bound to its own loop (llm's CLI calls asyncio.run per prompt)."""
    model = llm.get_async_model("mistral-large")

    async def ask(text: str) -> str:
        return await model.prompt(text).text()

    assert [asyncio.run(ask(f"loop {i}")) for i in range(3)] == [f"echo: loop {i}" for i in range(3)]
