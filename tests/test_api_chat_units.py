"""Unit tests of Mistral API chat (issue 2): catalog, options, translation, decoding, retries, errors.

HTTP goes through pytest-httpx (the ``mock`` fixture); every chat request body the plugin sends is
validated against ``ChatCompletionRequest`` of Mistral's OpenAPI spec when the test ends.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import httpx
import llm
import llm.cli
import pydantic
import pytest
from click.testing import CliRunner
from llm.parts import AttachmentPart, Message, ReasoningPart, TextPart, ToolCallPart, ToolResultPart

import llm_mistral_suite as suite
from conftest import SENTINEL_KEY, validate_request
from fake_mistral import DEFAULT_MODELS, chat_completion, chat_stream_events, model_card

API = "https://api.mistral.ai/v1"  # the default base_url; pytest-httpx answers every request, none leaves the machine
CHAT_URL = f"{API}/chat/completions"
WIRE_ID = re.compile(r"[A-Za-z0-9]{9}")
SSE_HEADERS = {"Content-Type": "text/event-stream"}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

ALIASES = {
    "mistral-large": "mistral-large-latest",
    "mistral-medium": "mistral-medium-latest",
    "mistral-small": "mistral-small-latest",
    "codestral": "codestral-latest",
    "ministral-3b": "ministral-3b-latest",
    "ministral-8b": "ministral-8b-latest",
    "ministral-14b": "ministral-14b-latest",
    "magistral-medium": "magistral-medium-latest",
    "magistral-small": "magistral-small-latest",
    "devstral": "devstral-medium-latest",
    "pixtral-large": "pixtral-large-latest",
    "voxtral-small": "voxtral-small-latest",
    "mistral-nemo": "open-mistral-nemo",
}
CHAT_ENTRIES = [e for e in suite.BUILTIN_CATALOG if "chat" in e.capabilities]
RETIRED = ["open-mistral-7b", "open-mixtral-8x7b", "open-mixtral-8x22b", "open-codestral-mamba", "mathstral-7b"]


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def mock(httpx_mock):
    """pytest-httpx's mock; afterwards every chat body sent is checked against the spec."""
    yield httpx_mock
    for request in httpx_mock.get_requests():
        if request.url.path.endswith("/chat/completions"):
            validate_request(json.loads(request.content), "ChatCompletionRequest")


@pytest.fixture
def key(monkeypatch) -> str:
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    return SENTINEL_KEY


def sse(*events: Any, done: bool = True) -> bytes:
    """An SSE body: dict events as JSON, str events as raw data payloads."""
    payloads = [e if isinstance(e, str) else json.dumps(e) for e in events] + ["[DONE]"] * done
    return "".join(f"data: {p}\n\n" for p in payloads).encode()


def chunk(delta: dict, finish_reason: str | None = None, **extra: Any) -> dict:
    return {"id": "r1", "object": "chat.completion.chunk", "model": "mistral-large-2512",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


def sent(mock) -> list[dict]:
    """Bodies of the chat requests made so far."""
    return [json.loads(r.content) for r in mock.get_requests() if r.url.path.endswith("/chat/completions")]


def build(model_name: str, messages: list[Message], *, tools=(), schema=None, **options) -> dict:
    """The request body the model builds for ``messages`` (no HTTP)."""
    model = llm.get_model(model_name)
    prompt = llm.Prompt(None, model, messages=messages, tools=list(tools), schema=schema,
                        options=model.Options(**options))
    body = model.request_body(prompt, stream=False)
    validate_request(body)
    return body


def user(text: str, *attachments: llm.Attachment) -> Message:
    return Message(role="user", parts=[TextPart(text=text), *(AttachmentPart(attachment=a) for a in attachments)])


def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


def weather(city: str) -> str:
    """Weather for a city."""
    return "sunny"


def registered_models() -> list[tuple[Any, Any, tuple]]:
    out: list[tuple[Any, Any, tuple]] = []
    suite.register_models(lambda model, async_model=None, aliases=(): out.append((model, async_model, tuple(aliases))))
    return out


# --- catalog ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias, api_name", ALIASES.items())
def test_alias_resolves_to_catalog_model(alias, api_name):
    model = llm.get_model(alias)
    assert isinstance(model, suite.MistralChat)
    assert model.model_id == f"mistral/{api_name}"
    assert llm.get_model(f"mistral/{api_name}").model_id == model.model_id
    async_model = llm.get_async_model(alias)
    assert isinstance(async_model, suite.AsyncMistralChat) and async_model.model_id == model.model_id


def test_catalog_capabilities_shape_the_models():
    large, voxtral, magistral, codestral = (llm.get_model(n) for n in
                                            ("mistral-large", "voxtral-small", "magistral-small", "codestral"))
    assert "image/png" in large.attachment_types and "audio/mpeg" not in large.attachment_types
    assert "audio/mpeg" in voxtral.attachment_types and "image/png" not in voxtral.attachment_types
    assert not codestral.attachment_types and "fim" in codestral.entry.capabilities
    assert "reasoning" in magistral.entry.capabilities and magistral.entry.status == suite.DEPRECATED
    assert all(m.supports_tools and m.supports_schema and m.can_stream for m in (large, voxtral, magistral))
    # Context lengths of the lineup (reference/mistral-api.md): 256k for Large/Medium/Small, 128k for Codestral.
    assert {n: llm.get_model(n).entry.context for n in ("mistral-large", "mistral-medium", "mistral-small",
                                                        "codestral")} == {
        "mistral-large": 262144, "mistral-medium": 262144, "mistral-small": 262144, "codestral": 131072}
    # Embedding models are not chat models.
    with pytest.raises(llm.UnknownModelError):
        llm.get_model("mistral/mistral-embed")


@pytest.mark.parametrize("api_name", RETIRED)
def test_retired_model_is_registered_and_explains_the_route(mock, key, api_name):
    model = llm.get_model(f"mistral/{api_name}")
    entry = model.entry
    assert entry.status == suite.RETIRED and entry.replacement
    with pytest.raises(suite.MistralSuiteError) as info:
        model.prompt("hello").text()
    message = str(info.value)
    assert "retired" in message and entry.replacement in message
    if entry.local_route:
        assert f"llm mistral local download {entry.local_route}" in message and "llamafile" in message
    assert mock.get_requests() == []


def test_retired_model_error_comes_before_missing_key(mock):
    with pytest.raises(suite.MistralSuiteError, match="retired") as info:
        llm.get_model("mistral/open-mixtral-8x7b").prompt("hi").text()
    assert not isinstance(info.value, suite.MissingKeyError)


def test_register_models_offline_with_key_and_no_cache(mock, key, user_dir):
    assert not suite.catalog_cache_path().exists()
    models = {m.model_id: (m, a, aliases) for m, a, aliases in registered_models()}
    for entry in CHAT_ENTRIES:
        model, async_model, aliases = models[entry.model_id]
        assert isinstance(model, suite.MistralChat) and isinstance(async_model, suite.AsyncMistralChat)
        assert async_model.model_id == entry.model_id and aliases == entry.aliases
    assert mock.get_requests() == []  # no network, even with a key and no cache
    # `llm models` lists them, still without a request.
    result = CliRunner().invoke(llm.cli.cli, ["models"])
    assert result.exit_code == 0, result.output
    assert "mistral/mistral-large-latest" in result.output and "mistral-large" in result.output
    assert mock.get_requests() == []


@pytest.mark.parametrize("content", [
    b"\x00\xff not json",
    b'{"data": "not a list"}',
    b'["a list"]',
    b"",
])  # fmt: skip
def test_register_models_survives_a_corrupt_cache(mock, key, content):
    suite.catalog_cache_path().write_bytes(content)
    assert {e.model_id for e in CHAT_ENTRIES} <= {m.model_id for m, _, _ in registered_models()}
    assert llm.get_model("mistral-large").model_id == "mistral/mistral-large-latest"


def test_register_models_skips_unreadable_cards(mock):
    cards = [{"no": "id"}, 5, None, {"id": "mistral-odd-1", "capabilities": "garbage"},
             model_card("mistral-good-2701", "completion_chat", "function_calling")]
    suite.catalog_cache_path().write_text(json.dumps({"data": cards}))
    ids = {m.model_id for m, _, _ in registered_models()}
    assert "mistral/mistral-good-2701" in ids and "mistral/mistral-large-latest" in ids


def test_refresh_caches_models_payload(mock, key):
    cards = [
        *DEFAULT_MODELS,
        # A deprecation announced for a built-in model, and one already past.
        model_card("mistral-small-latest", "completion_chat", "function_calling", "vision",
                   deprecation="2999-01-31T12:00:00Z", replacement="mistral-small-2999"),
        model_card("magistral-small-latest", "completion_chat", "function_calling", "reasoning",
                   deprecation="2025-01-31T12:00:00Z", replacement="mistral-small-latest"),
    ]
    mock.add_response(url=f"{API}/models", method="GET", json={"object": "list", "data": cards})
    result = CliRunner().invoke(llm.cli.cli, ["mistral", "refresh"])
    assert result.exit_code == 0, result.output
    [request] = mock.get_requests()
    assert request.headers["authorization"] == f"Bearer {SENTINEL_KEY}"
    assert suite.catalog_cache_path().exists()
    assert "ft:open-mistral-7b:abc123:20240101:xyz" in result.output and "mistral-new-2611" in result.output
    assert SENTINEL_KEY not in suite.catalog_cache_path().read_text()

    fine_tuned = llm.get_model("mistral/ft:open-mistral-7b:abc123:20240101:xyz")
    assert fine_tuned.supports_tools and fine_tuned.entry.context == 32768
    assert llm.get_model("mistral/mistral-new-2611").entry.status == suite.GA
    with pytest.raises(llm.UnknownModelError):
        llm.get_model("mistral/mistral-embed")

    small = llm.get_model("mistral-small")  # the alias survives the update
    assert small.model_id == "mistral/mistral-small-latest"
    assert (small.entry.status, small.entry.deprecation_date, small.entry.replacement) == (
        suite.DEPRECATED, "2999-01-31", "mistral-small-2999")
    magistral = llm.get_model("magistral-small")
    assert magistral.entry.status == suite.RETIRED
    with pytest.raises(suite.MistralSuiteError, match="retired.*mistral-small-latest"):
        magistral.prompt("hi").text()

    listing = CliRunner().invoke(llm.cli.cli, ["mistral", "models", "--json"])
    rows = {row["id"]: row for row in json.loads(listing.output)}
    assert rows["mistral/mistral-small-latest"]["status"] == "deprecated"
    assert rows["mistral/ft:open-mistral-7b:abc123:20240101:xyz"]["capabilities"] == ["chat", "tools"]
    assert len(mock.get_requests()) == 1  # listing and lookups read the cache only


# --- keys ------------------------------------------------------------------------------------------


def test_key_sources_in_order(monkeypatch, user_dir):
    with pytest.raises(suite.MissingKeyError, match="llm keys set mistral"):
        suite.mistral_key(None)
    monkeypatch.setenv("MISTRAL_API_KEY", "from-mistral-api-key")
    assert suite.mistral_key(None) == "from-mistral-api-key"
    monkeypatch.setenv("LLM_MISTRAL_KEY", "from-llm-mistral-key")
    assert suite.mistral_key(None) == "from-llm-mistral-key"
    (user_dir / "keys.json").write_text(json.dumps({"mistral": "from-keys-json"}))
    assert suite.mistral_key(None) == "from-keys-json"
    assert suite.mistral_key("explicit") == "explicit"


def test_key_is_sent_as_bearer(mock, key):
    mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    assert llm.get_model("mistral-large").prompt("hi", stream=False).text() == "ok"
    assert mock.get_requests()[0].headers["authorization"] == f"Bearer {SENTINEL_KEY}"


# --- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {"temperature": 2}, {"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5}, {"max_tokens": 0},
    {"presence_penalty": 3}, {"frequency_penalty": -2.5}, {"random_seed": -1},
    {"reasoning_effort": "extreme"}, {"no_such_option": 1},
])  # fmt: skip
def test_bad_option_is_a_validation_error(options):
    with pytest.raises(pydantic.ValidationError):
        llm.get_model("mistral-large").Options(**options)


def test_only_options_the_user_set_are_sent(mock, key):
    mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    mock.add_response(url=CHAT_URL, content=sse(*chat_stream_events(["ok"])), headers=SSE_HEADERS)
    model = llm.get_model("mistral-large")
    model.prompt("hi", stream=False, temperature=0.2, max_tokens=5).text()
    model.prompt("hi").text()
    plain, streamed = sent(mock)
    assert set(plain) == {"model", "messages", "temperature", "max_tokens"}
    assert (plain["temperature"], plain["max_tokens"]) == (0.2, 5)
    assert streamed == {"model": "mistral-large-latest", "messages": [{"role": "user", "content": "hi"}],
                        "stream": True}


def test_every_option_reaches_the_body_in_the_spec_shape(mock, key):
    mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    options = dict(temperature=0.7, top_p=0.9, max_tokens=100, stop='["END", "STOP"]', random_seed=42,
                   presence_penalty=0.5, frequency_penalty=-0.5, safe_prompt=True, prefix="Sure:",
                   prediction="x = 1", tool_choice="none")
    llm.get_model("mistral-large").prompt("hi", stream=False, **options).text()
    [body] = sent(mock)
    assert body["stop"] == ["END", "STOP"]
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "random_seed", "presence_penalty",
                                 "frequency_penalty", "safe_prompt", "tool_choice")} == {
        "temperature": 0.7, "top_p": 0.9, "max_tokens": 100, "random_seed": 42, "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "safe_prompt": True, "tool_choice": "none"}
    assert body["prediction"] == {"type": "content", "content": "x = 1"}
    assert body["messages"][-1] == {"role": "assistant", "content": "Sure:", "prefix": True}
    assert "prefix" not in body  # options that are not API fields stay out of the body


def test_single_stop_string_stays_a_string(mock, key):
    body = build("mistral-large", [user("hi")], stop="END")
    assert body["stop"] == "END"


def test_reasoning_effort_only_for_reasoning_models(mock, key):
    with pytest.raises(suite.MistralSuiteError, match="reasoning_effort"):
        llm.get_model("mistral-large").prompt("hi", reasoning_effort="high").text()
    assert mock.get_requests() == []
    assert build("magistral-small", [user("hi")], reasoning_effort="high")["reasoning_effort"] == "high"


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


def test_system_prompt_from_prompt_kwargs(mock, key):
    mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    llm.get_model("mistral-large").prompt("hi", system="You are terse.", stream=False).text()
    assert sent(mock)[0]["messages"] == [{"role": "system", "content": "You are terse."},
                                         {"role": "user", "content": "hi"}]


def test_image_attachment_is_a_data_uri_chunk():
    body = build("mistral-large", [user("What is this?", llm.Attachment(type="image/png", content=PNG))])
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image["type"] == "image_url"
    url = image["image_url"]["url"] if isinstance(image["image_url"], dict) else image["image_url"]
    assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_image_url_attachment_is_passed_as_url(mock):
    body = build("pixtral-large", [user("And this?", llm.Attachment(type="image/jpeg",
                                                                    url="https://example.com/cat.jpg"))])
    image = body["messages"][0]["content"][1]
    url = image["image_url"]["url"] if isinstance(image["image_url"], dict) else image["image_url"]
    assert url == "https://example.com/cat.jpg"
    assert mock.get_requests() == []  # the plugin does not download it


def test_audio_attachment_is_input_audio():
    audio = b"ID3\x03\x00fake mp3 bytes"
    body = build("voxtral-small", [user("Transcribe", llm.Attachment(type="audio/mpeg", content=audio))])
    assert body["messages"][0]["content"][1] == {"type": "input_audio",
                                                 "input_audio": base64.b64encode(audio).decode()}


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
    assert suite.wire_tool_call_id(llm_ids[0]) == ids[0]
    assert suite.wire_tool_call_id("D681PevKs") == "D681PevKs"
    assert WIRE_ID.fullmatch(suite.wire_tool_call_id(None))
    assert WIRE_ID.fullmatch(suite.wire_tool_call_id("ab\u00e9cdefgh"))  # 9 chars but not ASCII alnum


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
    strict = suite.strict_schema(NESTED_SCHEMA)
    objects = _objects(strict)
    assert len(objects) == 6
    assert {path: obj.get("additionalProperties") for path, obj in objects} == {path: False for path, _ in objects}
    assert NESTED_SCHEMA == original  # the caller's schema is not modified
    assert strict["properties"]["name"] == {"type": "string"}


def test_strict_schema_leaves_property_named_properties_alone():
    schema = {"type": "object", "properties": {"properties": {"type": "string"}, "type": {"type": "string"}}}
    strict = suite.strict_schema(schema)
    assert strict == {"type": "object", "additionalProperties": False,
                      "properties": {"properties": {"type": "string"}, "type": {"type": "string"}}}


def test_schema_becomes_strict_json_schema_response_format(mock, key):
    schema = llm.schema_dsl("name, age int, address: street, city")
    body = build("mistral-large", [user("invent a person")], schema=NESTED_SCHEMA)
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True and response_format["json_schema"]["name"]
    assert response_format["json_schema"]["schema"] == suite.strict_schema(NESTED_SCHEMA)
    body = build("mistral-large", [user("invent a person")], schema=schema)
    assert body["response_format"]["json_schema"]["schema"]["additionalProperties"] is False


# --- tool_choice, prefix, prediction ---------------------------------------------------------------


@pytest.mark.parametrize("choice", ["auto", "none", "any", "required"])
def test_tool_choice_keywords(choice):
    body = build("mistral-large", [user("hi")], tools=[llm.Tool.function(lookup)], tool_choice=choice)
    assert body["tool_choice"] == choice


def test_tool_choice_by_name():
    body = build("mistral-large", [user("hi")], tools=[llm.Tool.function(lookup), llm.Tool.function(weather)],
                 tool_choice="weather")
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}


def test_tool_choice_unknown_name_is_an_error():
    model = llm.get_model("mistral-large")
    prompt = llm.Prompt("hi", model, tools=[llm.Tool.function(lookup)], options=model.Options(tool_choice="nope"))
    with pytest.raises(suite.MistralSuiteError, match="nope.*lookup"):
        model.request_body(prompt, stream=False)


def test_prefix_and_prediction():
    body = build("codestral", [user("finish this")], prefix="def add(a, b):", prediction="def add(a, b):\n    return")
    assert body["messages"][-1] == {"role": "assistant", "content": "def add(a, b):", "prefix": True}
    assert body["prediction"] == {"type": "content", "content": "def add(a, b):\n    return"}
    assert "prefix" not in build("codestral", [user("x")])["messages"][-1]


# --- decoding replies ------------------------------------------------------------------------------


def test_stream_without_finish_reason_is_cut(mock, key):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS,
                      content=sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello wo"})))
    response = llm.get_model("mistral-large").prompt("hi")
    seen = []
    with pytest.raises(suite.StreamCutError, match="ended before it was finished"):
        for piece in response:
            seen.append(piece)
    assert seen == ["Hello wo"]
    assert len(mock.get_requests()) == 1  # text reached the user: no retry


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
    with pytest.raises(suite.MistralSuiteError, match=match):
        llm.get_model("mistral-large").prompt("hi").text()
    assert len(mock.get_requests()) == 1


def test_finish_reason_error_is_an_error(mock, key):
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*chat_stream_events(["Hi"], finish_reason="error")))
    with pytest.raises(suite.MistralSuiteError, match="stopped the reply with an error"):
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
    with pytest.raises(suite.MistralSuiteError, match="lookup.*not JSON"):
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


# --- retries ---------------------------------------------------------------------------------------


def _timed(status_or_response, times: list[float], **kwargs):
    def callback(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if isinstance(status_or_response, httpx.Response):
            return status_or_response
        return httpx.Response(status_or_response, **kwargs)

    return callback


@pytest.mark.parametrize("stream", [False, True])
def test_429_retry_after_is_honoured(mock, key, stream):
    times: list[float] = []
    mock.add_callback(_timed(429, times, headers={"Retry-After": "0.3"},
                             json={"object": "error", "message": "Requests rate limit exceeded", "code": "3505"}))
    ok = (httpx.Response(200, headers=SSE_HEADERS, content=sse(*chat_stream_events(["done"]))) if stream
          else httpx.Response(200, json=chat_completion("done")))
    mock.add_callback(_timed(ok, times))
    assert llm.get_model("mistral-large").prompt("hi", stream=stream).text() == "done"
    waited = times[1] - times[0]
    assert 0.3 <= waited < 2.0, waited  # the backoff alone would be <= 0.01 s here


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("stream", [False, True])
def test_server_errors_are_retried(mock, key, status, stream):
    mock.add_response(url=CHAT_URL, status_code=status, json={"object": "error", "message": "busy"})
    mock.add_response(url=CHAT_URL, status_code=503, text="Service Unavailable")
    if stream:
        mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*chat_stream_events(["fine"])))
    else:
        mock.add_response(url=CHAT_URL, json=chat_completion("fine"))
    assert llm.get_model("mistral-large").prompt("hi", stream=stream).text() == "fine"
    assert len(mock.get_requests()) == 3
    assert len({r.content for r in mock.get_requests()}) == 1  # the same body each time


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadError("connection reset"),
                                 httpx.RemoteProtocolError("server disconnected")])
def test_connection_errors_are_retried(mock, key, exc):
    mock.add_exception(exc)
    mock.add_response(url=CHAT_URL, headers=SSE_HEADERS, content=sse(*chat_stream_events(["back"])))
    assert llm.get_model("mistral-large").prompt("hi").text() == "back"
    assert len(mock.get_requests()) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
@pytest.mark.parametrize("stream", [False, True])
def test_client_errors_are_not_retried(mock, key, status, stream):
    mock.add_response(url=CHAT_URL, status_code=status,
                      json={"object": "error", "message": f"nope {status}", "type": "invalid_request_error"})
    with pytest.raises(suite.MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi", stream=stream).text()
    assert len(mock.get_requests()) == 1
    assert str(status) in str(info.value)


@pytest.mark.parametrize("attempts", [1, 3])
def test_attempts_are_bounded(mock, key, monkeypatch, attempts):
    monkeypatch.setenv("LLM_MISTRAL_MAX_ATTEMPTS", str(attempts))
    mock.add_response(url=CHAT_URL, status_code=503, json={"message": "overloaded"}, is_reusable=True)
    with pytest.raises(suite.MistralSuiteError, match="503") as info:
        llm.get_model("mistral-large").prompt("hi").text()
    assert len(mock.get_requests()) == attempts
    assert f"after {attempts} attempts" in str(info.value) and "overloaded" in str(info.value)


def test_default_attempts_is_five(mock, key):
    mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)
    with pytest.raises(suite.MistralSuiteError, match="not reachable.*after 5 attempts"):
        llm.get_model("mistral-large").prompt("hi").text()
    assert len(mock.get_requests()) == 5


def test_too_long_retry_after_fails_at_once(mock, key):
    mock.add_response(url=CHAT_URL, status_code=429, headers={"Retry-After": "120"}, json={"message": "slow down"})
    started = time.monotonic()
    with pytest.raises(suite.MistralSuiteError, match="120 s"):
        llm.get_model("mistral-large").prompt("hi").text()
    assert time.monotonic() - started < 2 and len(mock.get_requests()) == 1


def test_retry_after_parsing_and_backoff(monkeypatch):
    assert suite.parse_retry_after("0.3") == 0.3
    assert suite.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert 8 < suite.parse_retry_after(
        time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))) <= 10
    assert suite.parse_retry_after("soon") is None and suite.parse_retry_after(None) is None
    monkeypatch.setenv("LLM_MISTRAL_BACKOFF", "1")
    for attempt in (1, 2, 3, 4):
        delays = [suite.backoff_delay(attempt, None) for _ in range(200)]
        assert all(0 <= d <= 2 ** (attempt - 1) for d in delays) and len(set(delays)) > 100  # full jitter
    assert max(suite.backoff_delay(20, None) for _ in range(200)) <= 30
    assert suite.backoff_delay(3, 0.25) == 0.25


# --- error messages --------------------------------------------------------------------------------

DETAIL = [{"loc": ["body", "temperature"], "msg": "Input should be less than or equal to 1.5",
           "type": "less_than_equal"}]


@pytest.mark.parametrize("body", [
    {"detail": "Unauthorized"}, {"message": "Unauthorized", "request_id": "abc"}, None,
])  # fmt: skip
def test_401_says_how_to_set_the_key(mock, key, body):
    mock.add_response(url=CHAT_URL, status_code=401, **({"json": body} if body else {}))
    with pytest.raises(suite.MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi").text()
    assert "llm keys set mistral" in str(info.value) and "401" in str(info.value)


@pytest.mark.parametrize("body", [
    {"object": "error", "message": DETAIL[0]["msg"], "type": "invalid_request_error", "param": None, "code": "3210"},
    {"object": "error", "message": {"detail": DETAIL}, "type": "invalid_request_error", "param": None, "code": None},
    {"object": "error", "message": json.dumps({"detail": DETAIL}), "type": "invalid_request_error", "code": 3210},
    {"detail": DETAIL},
])  # fmt: skip
def test_422_shows_the_services_message(mock, key, body):
    mock.add_response(url=CHAT_URL, status_code=422, json=body)
    with pytest.raises(suite.MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi", stream=False).text()
    message = str(info.value)
    assert "422" in message and "Input should be less than or equal to 1.5" in message
    assert "{" not in message  # the message, not the raw JSON
    if "detail" in json.dumps(body):
        assert "temperature" in message


def test_400_and_404_messages(mock, key):
    mock.add_response(url=CHAT_URL, status_code=400, json={
        "object": "error", "message": "Prompt contains 300000 tokens, too large for model with 262144 maximum",
        "type": "invalid_request_error", "param": None, "code": 3051})
    mock.add_response(url=CHAT_URL, status_code=404, json={
        "object": "error", "message": "Invalid model: mistral-large-latest", "type": "invalid_model", "code": "1500"})
    model = llm.get_model("mistral-large")
    with pytest.raises(suite.MistralSuiteError, match="400.*too large for model"):
        model.prompt("hi").text()
    with pytest.raises(suite.MistralSuiteError, match="404.*Invalid model.*llm mistral refresh"):
        model.prompt("hi").text()


def test_404_on_a_model_with_a_known_successor_names_it(mock, key):
    mock.add_response(url=CHAT_URL, status_code=404, json={
        "object": "error", "message": "Invalid model: magistral-small-latest", "type": "invalid_model"})
    with pytest.raises(suite.MistralSuiteError, match="no longer serves magistral-small-latest.*mistral-small-latest"):
        llm.get_model("magistral-small").prompt("hi").text()


def test_non_json_success_body_is_a_clear_error(mock, key):
    mock.add_response(url=CHAT_URL, text="<html>proxy error</html>")
    with pytest.raises(suite.MistralSuiteError, match="not JSON"):
        llm.get_model("mistral-large").prompt("hi", stream=False).text()


ECHO = f"Invalid API key: {SENTINEL_KEY} (Bearer {SENTINEL_KEY})"
# The key straddling the places where messages are cut short (200 and 500 characters).
LONG_ECHOES = ["x" * n + SENTINEL_KEY for n in (150, 170, 185, 190, 450, 470, 480, 490)]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500])
def test_key_never_in_error_even_if_echoed(mock, key, monkeypatch, status):
    monkeypatch.setenv("LLM_MISTRAL_MAX_ATTEMPTS", "2")
    mock.add_response(url=CHAT_URL, status_code=status, is_reusable=True,
                      json={"object": "error", "message": ECHO, "detail": ECHO})
    with pytest.raises(suite.MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi").text()
    assert SENTINEL_KEY not in str(info.value) and SENTINEL_KEY not in repr(info.value.args)


@pytest.mark.parametrize("stream, content", [
    (True, sse(chunk({"content": "a"}), json.dumps({"object": "error", "message": ECHO}))),
    (True, sse(chunk({"content": "a"}), "not json " + ECHO)),
    (False, ECHO.encode()),
])  # fmt: skip
def test_key_never_in_body_errors_even_if_echoed(mock, key, stream, content):
    mock.add_response(url=CHAT_URL, content=content, headers=SSE_HEADERS if stream else {})
    with pytest.raises(suite.MistralSuiteError) as info:
        llm.get_model("mistral-large").prompt("hi", stream=stream).text()
    assert SENTINEL_KEY not in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("echo", LONG_ECHOES)
def test_key_never_in_error_even_in_part(mock, key, stream, echo):
    """A key cut in half by truncation would still leak its first characters."""
    prefix = SENTINEL_KEY[:8]
    mock.add_response(url=CHAT_URL, status_code=400, json={"message": echo})
    mock.add_response(url=CHAT_URL, content=(sse(echo) if stream else echo.encode()),
                      headers=SSE_HEADERS if stream else {})
    model = llm.get_model("mistral-large")
    for _ in range(2):
        with pytest.raises(suite.MistralSuiteError) as info:
            model.prompt("hi", stream=stream).text()
        assert prefix not in str(info.value)
