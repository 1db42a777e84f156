"""The ``-o`` options (issue 10, item 9): a stop list that is not one is an error, never a literal stop string."""

from __future__ import annotations

import llm
import pytest
from pydantic import ValidationError

from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok
from inprocess import invoke_llm

MODELS = ["mistral-small", "codestral-fim", "llamafile"]  # API chat, FIM and server options all take stop


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("value, needle", [
    ('["a",', "is not a valid JSON list"),
    ('[ "a", "b"', "is not a valid JSON list"),
    ("[1,2]", 'write ["[1,2]"]'),
    ('["a", 2]', "non-empty strings"),
    ("[]", "non-empty strings"),
    ('[""]', "non-empty strings"),
])  # fmt: skip
def test_a_stop_value_that_opens_a_list_must_be_one(model, value, needle):
    with pytest.raises(ValidationError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        llm.get_model(model).Options(stop=value)


@pytest.mark.parametrize("value, sent", [
    ('["END", "STOP"]', ["END", "STOP"]),
    ("[INST]", "[INST]"),  # Mistral's own control text stays a stop string
    ("[1", "[1"),
    ("END", "END"),
    (["a", "b"], ["a", "b"]),  # from Python
])  # fmt: skip
def test_stop_strings_and_lists_that_are_fine(value, sent):
    assert llm.get_model("mistral-small").Options(stop=value).stop == sent


def test_a_bad_stop_list_through_the_cli_sends_nothing(fake, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    result = invoke_llm("-m", "mistral-small", "-o", "stop", '["a",', "hi")
    assert_cli_error(result, "stop")
    assert "is not a valid JSON list" in result.stderr
    assert_cli_error(invoke_llm("-m", "mistral-small", "-o", "stop", "[1,2]", "hi"), "stop")
    assert fake.requests == []
    assert_cli_ok(invoke_llm("-m", "mistral-small", "-o", "stop", "[INST]", "hi"))
    assert fake.requests[0].body["stop"] == "[INST]"
