"""Translation: llm messages to the API's messages (roles, attachments, reasoning, tool calls, strict schemas), and replies back."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import llm
import llm.cli
import pytest
from api_mock import (
    CHAT_URL,
    INTERLEAVED_THINKING,
    PNG,
    SIGNED_DELTAS,
    SSE_HEADERS,
    WIRE_ID,
    build,
    chunk,
    lookup,
    sent,
    sse,
    user,
    weather,
)
from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok
from fake_mistral import chat_completion, chat_stream_events
from inprocess import invoke_llm
from llm.parts import (
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

from _llm_mistral_suite.errors import MistralSuiteError, StreamCutError
from _llm_mistral_suite.wire import strict_schema, wire_tool_call_id

# --- translation -----------------------------------------------------------------------------------


def test_roles_and_text_messages():
    body = build("mistral-large", [
        Message(role="system", parts=[TextPart(text="Be brief.")]),
        user("first"),
        Message(role="assistant", parts=[TextPart(text="one")]),
        user("second"),
    ])  # fmt: skip
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "second"},
    ]
    assert body["model"] == "mistral-large-latest" and "stream" not in body


def test_image_attachment_is_a_data_uri_chunk():
    body = build("mistral-large", [user("What is this?", llm.Attachment(type="image/png", content=PNG))])
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image["type"] == "image_url"
    url = image["image_url"]["url"] if isinstance(image["image_url"], dict) else image["image_url"]
    assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_audio_attachment_is_input_audio():
    audio = b"ID3\x03\x00fake mp3 bytes"
    body = build("voxtral-small", [user("Transcribe", llm.Attachment(type="audio/mpeg", content=audio))])
    assert body["messages"][0]["content"][1] == {"type": "input_audio",
                                                 "input_audio": base64.b64encode(audio).decode()}


def test_pdf_attachment_is_a_document_url_chunk(tmp_path):
    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(b"%PDF-1.4 tiny")
    body = build("mistral-medium", [user("Summarise", llm.Attachment(path=str(pdf)),
                                         llm.Attachment(type="application/pdf", url="https://example.com/q3.pdf"))])
    _, local, linked = body["messages"][0]["content"]
    assert local == {"type": "document_url", "document_name": "contract.pdf",
                     "document_url": "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 tiny").decode()}
    assert linked == {"type": "document_url", "document_url": "https://example.com/q3.pdf"}


def test_replaced_attachments_are_sent_instead():
    from _llm_mistral_suite.wire import chat_messages

    original = llm.Attachment(type="application/pdf", content=b"%PDF-1.4 big")
    model = llm.get_model("mistral-medium")
    prompt = llm.Prompt(None, model, messages=[user("Read", original)])
    signed = llm.Attachment(type="application/pdf", url="https://files.example/signed/1")
    [message] = chat_messages(prompt, thinking=True, replaced={id(original): signed})
    assert message["content"][1] == {"type": "document_url", "document_url": "https://files.example/signed/1"}


def test_reasoning_parts_are_replayed_as_thinking_chunks():
    body = build("magistral-small", [
        user("What is 17 times 19?"),
        Message(role="assistant", parts=[
            ReasoningPart(text="17 x 20 = 340, minus 17 ", provider_metadata={"mistral": {"signature": "sig-1"}}),
            TextPart(text="323"),
        ]),
        user("Plus one?"),
    ])  # fmt: skip
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": [{"type": "text", "text": "17 x 20 = 340, minus 17 "}], "signature": "sig-1"},
        {"type": "text", "text": "323"},
    ]}  # fmt: skip


def test_empty_signed_reasoning_is_still_replayed():
    body = build("magistral-small", [
        user("q"),
        Message(role="assistant", parts=[
            ReasoningPart(text="", provider_metadata={"mistral": {"signature": "opaque-signature"}}),
            TextPart(text="a"),
        ]),
        user("again"),
    ])  # fmt: skip
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": [], "signature": "opaque-signature"}, {"type": "text", "text": "a"}]


def test_reasoning_logged_by_llm_mistral_is_replayed_from_its_raw_chunk():
    """llm-mistral 0.16 kept each block's raw chunk as ``content_chunk``: its conversations go back as sent."""
    raw = {"type": "thinking", "thinking": [{"type": "text", "text": "Work "}, {"type": "text", "text": "it out."}],
           "signature": "stream-signature", "closed": True}
    body = build("magistral-small", [
        user("q"),
        Message(role="assistant", parts=[
            ReasoningPart(text="Work it out.", provider_metadata={"mistral": {
                "content_chunk": raw, "signature": "stream-signature", "closed": True}}),
            TextPart(text="The answer."),
        ]),
        user("again"),
    ])  # fmt: skip
    assert body["messages"][1]["content"] == [raw, {"type": "text", "text": "The answer."}]


def test_reasoning_of_other_providers_goes_back_as_its_text():
    body = build("magistral-small", [
        user("q"),
        Message(role="assistant", parts=[ReasoningPart(text="hmm"), ReasoningPart(text=""), TextPart(text="a")]),
        user("again"),
    ])  # fmt: skip
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}, {"type": "text", "text": "a"}]


def test_redacted_reasoning_is_not_replayed():
    body = build("magistral-small", [
        user("q"), Message(role="assistant", parts=[ReasoningPart(text="", redacted=True), TextPart(text="a")]),
        user("again"),
    ])  # fmt: skip
    assert body["messages"][1] == {"role": "assistant", "content": "a"}


def test_tool_call_ids_map_to_nine_alnum_chars_consistently():
    llm_ids = ["tc_01jzq8m4x5y6z7a8b9c0d1e2f3", "call_abc-123"]
    body = build("mistral-large", [
        user("use the tools"),
        Message(role="assistant", parts=[
            ToolCallPart(name="lookup", arguments={"q": "x"}, tool_call_id=llm_ids[0]),
            ToolCallPart(name="weather", arguments={"city": "Paris"}, tool_call_id=llm_ids[1]),
        ]),
        Message(role="tool", parts=[
            ToolResultPart(name="lookup", output="found x", tool_call_id=llm_ids[0]),
            ToolResultPart(name="weather", output="", tool_call_id=llm_ids[1], exception="ValueError: no city"),
        ]),
    ], tools=[llm.Tool.function(lookup), llm.Tool.function(weather)])  # fmt: skip
    assistant, tool_a, tool_b = body["messages"][1:]
    ids = [call["id"] for call in assistant["tool_calls"]]
    assert all(WIRE_ID.fullmatch(i) for i in ids) and len(set(ids)) == 2
    assert [tool_a["tool_call_id"], tool_b["tool_call_id"]] == ids
    assert assistant["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q": "x"}'}
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"city": "Paris"}
    assert (tool_a["role"], tool_a["name"], tool_a["content"]) == ("tool", "lookup", "found x")
    assert tool_b["name"] == "weather" and "no city" in tool_b["content"]
    # `name` is only allowed on tool messages.
    assert [m["role"] for m in body["messages"] if "name" in m] == ["tool", "tool"]
    # The mapping is stable (the same llm id always gives the same wire id) and keeps valid ids.
    assert wire_tool_call_id(llm_ids[0]) == ids[0]
    assert wire_tool_call_id("D681PevKs") == "D681PevKs"
    assert WIRE_ID.fullmatch(wire_tool_call_id(None))
    assert WIRE_ID.fullmatch(wire_tool_call_id("ab\u00e9cdefgh"))  # 9 chars but not ASCII alnum


def test_tool_definitions():
    body = build("mistral-large", [user("hi")], tools=[llm.Tool.function(lookup)])
    assert body["tools"] == [{"type": "function", "function": {
        "name": "lookup", "description": "Look something up.",
        "parameters": {"properties": {"q": {"type": "string"}}, "required": ["q"], "type": "object"}}}]


# --- schemas ---------------------------------------------------------------------------------------

NESTED_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "address": {"type": "object", "properties": {
            "street": {"type": "string"},
            "geo": {"type": "object", "properties": {"lat": {"type": "number"}}},
        }},
        "pets": {"type": "array", "items": {"type": "object", "properties": {"kind": {"type": "string"}}}},
        "maybe": {"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"type": "null"}]},
        "friend": {"$ref": "#/$defs/Person"},
    },
    "$defs": {"Person": {"type": "object", "properties": {"nick": {"type": "string"}}}},
    "required": ["name"],
}  # fmt: skip


def _objects(schema: Any, path: str = "") -> list[tuple[str, dict]]:
    """Every object schema in ``schema`` (schema positions only, not property maps)."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            found.append((path or "/", schema))
        for keyword, value in schema.items():
            if keyword in ("properties", "$defs", "definitions") and isinstance(value, dict):
                for name, sub in value.items():
                    found += _objects(sub, f"{path}/{keyword}/{name}")
            elif keyword in ("items", "additionalProperties", "not"):
                found += _objects(value, f"{path}/{keyword}")
            elif keyword in ("anyOf", "oneOf", "allOf", "prefixItems"):
                for i, sub in enumerate(value):
                    found += _objects(sub, f"{path}/{keyword}/{i}")
    return found


def test_strict_schema_closes_every_object():
    original = json.loads(json.dumps(NESTED_SCHEMA))
    strict = strict_schema(NESTED_SCHEMA)
    objects = _objects(strict)
    assert len(objects) == 6
    assert {path: obj.get("additionalProperties") for path, obj in objects} == {path: False for path, _ in objects}
    assert NESTED_SCHEMA == original  # the caller's schema is not modified
    assert strict["properties"]["name"] == {"type": "string"}


def test_strict_schema_leaves_property_named_properties_alone():
    schema = {"type": "object", "properties": {"properties": {"type": "string"}, "type": {"type": "string"}}}
    strict = strict_schema(schema)
    assert strict == {"type": "object", "additionalProperties": False,
                      "properties": {"properties": {"type": "string"}, "type": {"type": "string"}}}


def test_schema_becomes_strict_json_schema_response_format(mock, key):
    schema = llm.schema_dsl("name, age int, address: street, city")
    body = build("mistral-large", [user("invent a person")], schema=NESTED_SCHEMA)
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True and response_format["json_schema"]["name"]
    assert response_format["json_schema"]["schema"] == strict_schema(NESTED_SCHEMA)
    body = build("mistral-large", [user("invent a person")], schema=schema)
    assert body["response_format"]["json_schema"]["schema"]["additionalProperties"] is False


# --- decoding replies ------------------------------------------------------------------------------


def test_stream_without_finish_reason_or_done_is_cut(mock, key):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello wo"}), done=False))
    response = llm.get_model("mistral-large").prompt("hi")
    seen = []
    with pytest.raises(StreamCutError, match="ended before it was finished"):
        for piece in response:
            seen.append(piece)
    assert seen == ["Hello wo"]
    assert len(mock.get_requests()) == 1  # text reached the user: no retry


@pytest.mark.asyncio
@pytest.mark.parametrize("async_", [False, True])
async def test_done_without_finish_reason_is_complete(mock, key, async_):
    """Some proxies and compatible servers end with [DONE] and never send a finish_reason: [DONE] proves the
    server finished."""
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}), chunk({"content": " world"})))
    if async_:
        response = llm.get_async_model("mistral-large").prompt("hi")
        assert await response.text() == "Hello world"
    else:
        response = llm.get_model("mistral-large").prompt("hi")
        assert response.text() == "Hello world"
    assert "finish_reason" not in response.response_json


def test_stream_without_done_but_finished_is_fine(mock, key):
    events = chat_stream_events(["Hel", "lo"])
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*events, done=False))
    assert llm.get_model("mistral-large").prompt("hi").text() == "Hello"


@pytest.mark.parametrize("bad, match", [
    ("{not json", "malformed stream chunk"),
    ('{"id": "x", "object": "chat.completion.chunk"}', "malformed stream chunk"),
    ("[1, 2]", "malformed stream chunk"),
    ('{"object": "error", "message": "Service overloaded mid-stream"}', "error mid-stream: Service overloaded"),
])  # fmt: skip
def test_malformed_or_error_chunk_is_a_clear_error(mock, key, bad, match):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(chunk({"content": "Hi"}), bad))
    with pytest.raises(MistralSuiteError, match=match):
        llm.get_model("mistral-large").prompt("hi").text()
    assert len(mock.get_requests()) == 1


def test_finish_reason_error_is_an_error(mock, key):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*chat_stream_events(["Hi"], finish_reason="error")))
    with pytest.raises(MistralSuiteError, match="stopped the reply with an error"):
        llm.get_model("mistral-large").prompt("hi").text()


def test_tool_call_arguments_accumulate_by_index(mock, key):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": [{"index": 0, "id": "AAAAAAAA1", "function": {"name": "lookup", "arguments": '{"q": '}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "BBBBBBBB2", "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"ab'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": {"city": "Paris"}}}]}),  # an object, not a string
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'c"}'}}]}, "tool_calls"),
    ))  # fmt: skip
    response = llm.get_model("mistral-large").prompt("hi", tools=[lookup, weather])
    events = list(response.stream_events())
    calls = response.tool_calls()
    assert [(c.name, c.arguments, c.tool_call_id) for c in calls] == [
        ("lookup", {"q": "abc"}, "AAAAAAAA1"), ("weather", {"city": "Paris"}, "BBBBBBBB2")]
    assert [e.tool_name for e in events if e.type == "tool_call_name"] == ["lookup", "weather"]


def test_tool_call_without_id_gets_a_wire_id(mock, key):
    mock.add_response(url=CHAT_URL, json=chat_completion(
        "", finish_reason="tool_calls",
        tool_calls=[{"type": "function", "function": {"name": "lookup", "arguments": {"q": "z"}}}]))
    response = llm.get_model("mistral-large").prompt("hi", tools=[lookup], stream=False)
    [call] = response.tool_calls()
    assert WIRE_ID.fullmatch(call.tool_call_id) and call.arguments == {"q": "z"}


def test_tool_call_with_invalid_json_arguments(mock, key):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(
        chunk({"tool_calls": [{"index": 0, "id": "AAAAAAAA1", "function": {"name": "lookup", "arguments": "{oops"}}]},
              "tool_calls")))
    with pytest.raises(MistralSuiteError, match="lookup.*not JSON"):
        llm.get_model("mistral-large").prompt("hi", tools=[lookup]).text()


def test_usage_with_cached_tokens_and_resolved_model(mock, key):
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
             "prompt_tokens_details": {"cached_tokens": 64}}
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*chat_stream_events(["Hi", "!"], usage=usage)))
    response = llm.get_model("mistral-large").prompt("hi")
    assert response.text() == "Hi!"
    assert response.usage() == llm.models.Usage(input=100, output=5, details={"cached_tokens": 64})
    assert response.resolved_model == "mistral-large-2512"
    assert response.response_json["finish_reason"] == "stop"
    assert SENTINEL_KEY not in json.dumps(response.response_json)


def test_non_streamed_usage(mock, key):
    mock.add_response(url=CHAT_URL, json=chat_completion("fine", model="mistral-large-latest", usage={
        "prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}))
    response = llm.get_model("mistral-large").prompt("hi", stream=False)
    assert response.text() == "fine"
    assert (response.usage().input, response.usage().output) == (7, 1)
    assert response.resolved_model is None  # the model answered under the requested name


def test_recorded_reasoning_stream_gives_answer_and_reasoning(mock, key, recorded):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=(recorded / "magistral-high-stream.sse").read_bytes())
    response = llm.get_model("magistral-small").prompt("What is 17 times 19? Answer briefly.",
                                                       reasoning_effort="high")
    events = list(response.stream_events())
    assert response.text() == "323"
    reasoning = "".join(e.chunk for e in events if e.type == "reasoning")
    assert reasoning.startswith("Okay, the user is asking for the product of 17 and 19")
    assert "323" not in "".join(e.chunk for e in events if e.type == "text").replace("323", "", 1)
    [message] = response.messages()
    assert [type(p).__name__ for p in message.parts] == ["ReasoningPart", "TextPart"]


def test_recorded_reasoning_completion(mock, key, recorded):
    mock.add_response(url=CHAT_URL, content=(recorded / "magistral-high-completion.json").read_bytes())
    response = llm.get_model("magistral-small").prompt("q", stream=False)
    assert response.text() == "323"
    [message] = response.messages()
    assert message.parts[0].text.startswith("I need to calculate 17 multiplied by 19")
    assert response.usage().input == 28


# --- signed thinking blocks: one reasoning part each, sent back exactly ---------------------------

SIGNED_BLOCKS = [  # a whole message: two thinking blocks, each with its own signature, then the answer
    {"type": "thinking", "thinking": [{"type": "text", "text": "First, "}, {"type": "text", "text": "multiply."}],
     "signature": "sig-one", "closed": True},
    {"type": "thinking", "thinking": [{"type": "text", "text": "Then check."}], "signature": "sig-two"},
    {"type": "text", "text": "323"},
]
SIGNED_STREAM_REPLAY = [  # what goes back after the stream: each block with its original fragments
    {"type": "thinking", "thinking": [{"type": "text", "text": "First, "}, {"type": "text", "text": "multiply."}],
     "signature": "sig-one", "closed": True},
    {"type": "thinking", "thinking": [{"type": "text", "text": "Then "}, {"type": "text", "text": "check."}],
     "signature": "sig-two", "closed": True},
    {"type": "text", "text": "323"},
]


def _signed_reply(mock, stream: bool) -> None:
    if stream:
        events = [chunk(delta, "stop" if i == len(SIGNED_DELTAS) - 1 else None) for i, delta in enumerate(SIGNED_DELTAS)]
        mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*events))
    else:
        mock.add_response(url=CHAT_URL, json=chat_completion(SIGNED_BLOCKS))
    mock.add_response(url=CHAT_URL, json=chat_completion("324"))


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("async_", [False, True])
async def test_two_signed_thinking_blocks_are_two_parts_sent_back_exactly(mock, key, async_, stream):
    _signed_reply(mock, stream)
    if async_:
        conversation = llm.get_async_model("magistral-small").conversation()
        first = conversation.prompt("What is 17 times 19?", stream=stream)
        events = [event async for event in first.astream_events()]
        [message] = await first.messages()
        second = conversation.prompt("Plus one?", stream=False)
        assert await second.text() == "324"
    else:
        conversation = llm.get_model("magistral-small").conversation()
        first = conversation.prompt("What is 17 times 19?", stream=stream)
        events = list(first.stream_events())
        [message] = first.messages()
        assert conversation.prompt("Plus one?", stream=False).text() == "324"
    reasoning = [e.chunk for e in events if e.type == "reasoning" and e.chunk]
    text = "".join(e.chunk for e in events if e.type == "text")
    if stream:  # the thinking is shown as it arrives, fragment by fragment, before the answer
        assert reasoning == ["First, ", "multiply.", "Then ", "check."]
    assert text == "323"
    parts = message.parts
    assert [type(p).__name__ for p in parts] == ["ReasoningPart", "ReasoningPart", "TextPart"]
    assert [p.text for p in parts] == ["First, multiply.", "Then check.", "323"]
    assert [p.provider_metadata["mistral"]["signature"] for p in parts[:2]] == ["sig-one", "sig-two"]
    replayed = sent(mock)[1]["messages"]
    assert [m["role"] for m in replayed] == ["user", "assistant", "user"]
    assert replayed[1] == {"role": "assistant", "content": SIGNED_STREAM_REPLAY if stream else SIGNED_BLOCKS}


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("async_", [False, True])
async def test_interleaved_and_empty_blocks_go_back_in_their_places(mock, key, async_, stream):
    """The parts keep the reply's order, an empty signed block included, and the next turn sends thinking and
    text back in that order, each text as it was printed (not joined with a newline)."""
    if stream:  # one chunk per content item, as the service streams them
        deltas = [{"content": [item]} for item in INTERLEAVED_THINKING]
        mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(
            *[chunk(delta, "stop" if i == len(deltas) - 1 else None) for i, delta in enumerate(deltas)]))
    else:
        mock.add_response(url=CHAT_URL, json=chat_completion(INTERLEAVED_THINKING))
    mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    if async_:
        conversation = llm.get_async_model("magistral-small").conversation()
        first = conversation.prompt("Think", stream=stream)
        assert await first.text() == "ansmore"
        [message] = await first.messages()
        await conversation.prompt("Again", stream=False).text()
    else:
        conversation = llm.get_model("magistral-small").conversation()
        first = conversation.prompt("Think", stream=stream)
        assert first.text() == "ansmore"
        [message] = first.messages()
        conversation.prompt("Again", stream=False).text()
    assert [(type(p).__name__, p.text) for p in message.parts] == [
        ("ReasoningPart", ""), ("ReasoningPart", "AB"), ("TextPart", "ans"), ("ReasoningPart", "C"),
        ("TextPart", "more")]
    assert sent(mock)[1]["messages"][1] == {"role": "assistant", "content": INTERLEAVED_THINKING}


def test_a_plain_reply_in_several_text_parts_goes_back_as_printed():
    reply = Message(role="assistant", parts=[TextPart(text="Hello, "), TextPart(text="world")])
    body = build("mistral-large", [Message(role="user", parts=[TextPart(text="hi")]), reply,
                                   Message(role="user", parts=[TextPart(text="again")])])
    assert body["messages"][1] == {"role": "assistant", "content": "Hello, world"}


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("async_", [False, True])
async def test_thinking_then_tool_call(mock, key, async_, stream):
    thinking = {"type": "thinking", "thinking": [{"type": "text", "text": "Use a tool."}], "signature": "tool-sig"}
    call = {"id": "call12345", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    if stream:
        mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(
            chunk({"content": [thinking]}), chunk({"tool_calls": [{**call, "index": 0}]}, "tool_calls")))
    else:
        mock.add_response(url=CHAT_URL, json=chat_completion([thinking], finish_reason="tool_calls", tool_calls=[call]))
    model = (llm.get_async_model if async_ else llm.get_model)("magistral-small")
    response = model.prompt("Look up x", tools=[lookup], stream=stream)
    [message] = (await response.messages()) if async_ else response.messages()
    assert [type(p).__name__ for p in message.parts] == ["ReasoningPart", "ToolCallPart"]
    assert message.parts[0].provider_metadata == {"mistral": {"signature": "tool-sig"}}
    assert message.parts[1].arguments == {"q": "x"} and message.parts[1].tool_call_id == "call12345"


def test_recorded_completion_is_sent_back_as_recorded(mock, key, recorded):
    """The non-streamed thinking goes back byte for byte as in the recorded replay the service accepted."""
    replay = json.loads((recorded / "magistral-completion-replay.json").read_text())
    mock.add_response(url=CHAT_URL, content=(recorded / "magistral-high-completion.json").read_bytes())
    mock.add_response(url=CHAT_URL, json=replay["response"])
    conversation = llm.get_model("magistral-small").conversation()
    assert conversation.prompt("What is 17 times 19? Answer briefly.", stream=False).text() == "323"
    answer = conversation.prompt("What is that result plus one? Answer only the number.", stream=False)
    assert answer.text() == "324"
    assert sent(mock)[1]["messages"] == replay["request"]["messages"]


def test_recorded_stream_is_one_block_sent_back_in_its_fragments(mock, key, recorded):
    """A streamed thinking block goes back with the fragments the service streamed, each as it came, and its
    ``closed`` flag; the recorded replay the service accepted holds the same fragments in the same order."""
    raw = (recorded / "magistral-high-stream.sse").read_bytes()
    fragments = [
        item
        for line in raw.decode().splitlines() if line.startswith("data: {")
        for piece in json.loads(line[6:])["choices"][0]["delta"].get("content") or ()
        if isinstance(piece, dict) and piece["type"] == "thinking"
        for item in piece["thinking"]
    ]
    replay = json.loads((recorded / "magistral-stream-replay.json").read_text())
    recorded_items = [t for c in replay["request"]["messages"][1]["content"] if c["type"] == "thinking"
                      for t in c["thinking"]]
    assert recorded_items == fragments and len(fragments) > 50
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=raw)
    mock.add_response(url=CHAT_URL, json=replay["response"])
    conversation = llm.get_model("magistral-small").conversation()
    first = conversation.prompt("What is 17 times 19? Answer briefly.", reasoning_effort="high")
    assert first.text() == "323"
    [message] = first.messages()
    assert [type(p).__name__ for p in message.parts] == ["ReasoningPart", "TextPart"]
    assert conversation.prompt("What is that result plus one?", stream=False).text() == "324"
    assistant = sent(mock)[1]["messages"][1]
    assert assistant == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": fragments, "closed": True}, {"type": "text", "text": "323"}]}


# --- issue 10: nothing to send, and attachments over the service's limits, are refused before sending -------



@pytest.mark.parametrize("messages", [
    [],
    [Message(role="system", parts=[TextPart(text="be brief")])],
    [user("")],
    [user("  \n\t")],
    [user("hi"), Message(role="assistant", parts=[TextPart(text="hello")])],  # `llm -c ""`: no new turn
])  # fmt: skip
def test_nothing_to_answer_is_refused(messages):
    with pytest.raises(MistralSuiteError, match="The prompt is empty"):
        build("mistral-large", messages)


def test_an_attachment_alone_is_something_to_answer():
    assert build("mistral-large", [user("", llm.Attachment(content=PNG))])["messages"][0]["content"][0]["type"] == \
        "image_url"


@pytest.mark.parametrize("args, stdin", [
    (("-m", "mistral-small", ""), None),
    (("-m", "mistral-small"), "\n"),  # `echo | llm -m mistral-small`
    (("-m", "mistral-small", "-s", "be brief", ""), None),
    (("-m", "mistral-small", "", "--no-stream"), None),
    (("-m", "mistral-small", "", "--async"), None),
])  # fmt: skip
def test_an_empty_prompt_is_refused_locally(fake, monkeypatch, args, stdin):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    assert_cli_error(invoke_llm(*args, input=stdin), "The prompt is empty")
    assert fake.requests == []  # no `messages: []` and its 422


def test_continuing_with_an_empty_prompt_is_refused(fake, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    assert_cli_ok(invoke_llm("-m", "mistral-small", "hi"))
    assert_cli_error(invoke_llm("-c", ""), "The prompt is empty")
    assert len(fake.requests) == 1


def test_text_that_is_not_utf8_is_one_clear_error(fake, cli_env):
    """Bytes that are not UTF-8 on standard input reach the plugin as lone surrogates (Python's
    surrogateescape); they used to end in httpx's cryptic 'surrogates not allowed'."""
    result = subprocess.run([sys.executable, "-m", "llm", "-m", "mistral-small"], input=b"caf\xe9 au lait",
                            capture_output=True, env=cli_env, timeout=60)
    completed = subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                            result.stderr.decode("utf-8", "replace"))
    assert_cli_error(completed, "not valid UTF-8", "byte 0xe9 after 'caf'", "iconv")
    assert fake.requests == []
