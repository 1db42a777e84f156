"""Mistral API chat models: the key, the options and the request body they build (HTTP through pytest-httpx)."""

from __future__ import annotations

import json

import llm
import llm.cli
import pydantic
import pytest
from api_mock import (
    CHAT_URL,
    SSE_HEADERS,
    build,
    lookup,
    sent,
    sse,
    user,
    weather,
)
from click.testing import CliRunner
from conftest import SENTINEL_KEY
from fake_mistral import chat_completion, chat_stream_events

from _llm_mistral_suite.errors import MissingKeyError, MistralSuiteError
from _llm_mistral_suite.settings import mistral_key

# --- keys ------------------------------------------------------------------------------------------


def test_key_sources_in_order(monkeypatch, user_dir):
    with pytest.raises(MissingKeyError, match="llm keys set mistral"):
        mistral_key(None)
    monkeypatch.setenv("MISTRAL_API_KEY", "from-mistral-api-key")
    assert mistral_key(None) == "from-mistral-api-key"
    monkeypatch.setenv("LLM_MISTRAL_KEY", "from-llm-mistral-key")
    assert mistral_key(None) == "from-llm-mistral-key"
    (user_dir / "keys.json").write_text(json.dumps({"mistral": "from-keys-json"}))
    assert mistral_key(None) == "from-keys-json"
    assert mistral_key("explicit") == "explicit"


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


@pytest.mark.asyncio
@pytest.mark.parametrize("async_", [False, True])
async def test_prompt_cache_key_is_the_conversation_id(mock, key, async_):
    for _ in range(4):
        mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    model = (llm.get_async_model if async_ else llm.get_model)("mistral-large")
    conversation = model.conversation()
    prompts = [conversation.prompt("one", stream=False), conversation.prompt("two", stream=False),
               conversation.prompt("three", stream=False, prompt_cache_key="none"),
               model.prompt("alone", stream=False)]
    for response in prompts:
        assert (await response.text()) if async_ else response.text()
    assert [body.get("prompt_cache_key") for body in sent(mock)] == [conversation.id, conversation.id, None, None]


def test_service_tier_guardrails_and_an_own_cache_key(mock, key):
    mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    guardrail = {"moderation_llm_v1": {"action": "block", "custom_category_thresholds": {"pii": 0.2}},
                 "block_on_error": False}
    model = llm.get_model("mistral-small")
    model.prompt("hi", stream=False, service_tier="standard_only", guardrails=json.dumps(guardrail),
                 prompt_cache_key="support-bot").text()
    [body] = sent(mock)  # the mock fixture validates it against ChatCompletionRequest
    assert (body["service_tier"], body["guardrails"], body["prompt_cache_key"]) == (
        "standard_only", [guardrail], "support-bot")
    assert model.Options(guardrails=[guardrail, guardrail]).guardrails == [guardrail, guardrail]
    for bad in ("block", '[{"moderation": 1}]', "[1]"):
        with pytest.raises(pydantic.ValidationError, match="guardrails"):
            model.Options(guardrails=bad)
    with pytest.raises(pydantic.ValidationError, match="service_tier"):
        model.Options(service_tier="priority")


def test_single_stop_string_stays_a_string(mock, key):
    body = build("mistral-large", [user("hi")], stop="END")
    assert body["stop"] == "END"


@pytest.mark.parametrize("get_model", [llm.get_model, llm.get_async_model])
def test_reasoning_effort_only_for_reasoning_models(mock, key, get_model):
    """Options per model kind: only reasoning models list and take reasoning_effort."""
    plain, reasoning = get_model("mistral-large"), get_model("magistral-small")
    assert "reasoning_effort" not in plain.Options.model_fields
    assert "reasoning_effort" in reasoning.Options.model_fields
    assert {"temperature", "prefix", "tool_choice"} <= set(plain.Options.model_fields)
    with pytest.raises(pydantic.ValidationError, match="works only with reasoning models"):
        plain.Options(reasoning_effort="high")
    with pytest.raises(pydantic.ValidationError, match="reasoning_effort"):
        plain.prompt("hi", reasoning_effort="high")
    assert mock.get_requests() == []
    assert build("magistral-small", [user("hi")], reasoning_effort="high")["reasoning_effort"] == "high"
    # Small 4 and Medium 3.5 reason when asked (Mistral's "adjustable reasoning").
    for name in ("mistral-small", "mistral-medium"):
        assert build(name, [user("hi")], reasoning_effort="none")["reasoning_effort"] == "none"


def test_reasoning_effort_in_llm_models_options():
    magistral, large = (CliRunner().invoke(llm.cli.cli, ["models", "--options", "-q", f"mistral/{name}"]).output
                        for name in ("magistral-small-latest", "mistral-large-latest"))
    assert magistral.startswith("MistralChat: mistral/magistral-small-latest") and "Options:" in magistral
    assert large.startswith("MistralChat: mistral/mistral-large-latest") and "Options:" in large
    assert "reasoning_effort" in magistral and "reasoning_effort" not in large
    assert "temperature" in magistral and "temperature" in large


def test_options_logged_by_llm_mistral_still_validate():
    """llm-mistral before 0.16 logged ``safe_mode`` (now safe_prompt) with every prompt; `llm -c` validates the
    logged options of earlier turns again."""
    options = llm.get_model("mistral-small").Options(temperature=0.7, top_p=1, safe_mode=False)
    assert (options.safe_prompt, options.temperature) == (False, 0.7)


def test_system_prompt_from_prompt_kwargs(mock, key):
    mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    llm.get_model("mistral-large").prompt("hi", system="You are terse.", stream=False).text()
    assert sent(mock)[0]["messages"] == [{"role": "system", "content": "You are terse."},
                                         {"role": "user", "content": "hi"}]


def test_image_url_attachment_is_passed_as_url(mock):
    body = build("pixtral-large", [user("And this?", llm.Attachment(type="image/jpeg",
                                                                    url="https://example.com/cat.jpg"))])
    image = body["messages"][0]["content"][1]
    url = image["image_url"]["url"] if isinstance(image["image_url"], dict) else image["image_url"]
    assert url == "https://example.com/cat.jpg"
    assert mock.get_requests() == []  # the plugin does not download it


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
    with pytest.raises(MistralSuiteError, match="nope.*lookup"):
        model.request_body(prompt, stream=False)


def test_prefix_and_prediction():
    body = build("codestral", [user("finish this")], prefix="def add(a, b):", prediction="def add(a, b):\n    return")
    assert body["messages"][-1] == {"role": "assistant", "content": "def add(a, b):", "prefix": True}
    assert body["prediction"] == {"type": "content", "content": "def add(a, b):\n    return"}
    assert "prefix" not in build("codestral", [user("x")])["messages"][-1]
