"""What local models are fed: the GGUF's chat template, Mistral's system prompt placement, the default template."""

from __future__ import annotations


import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from conftest import assert_cli_ok  # noqa: E402
from gguf_factory import MISTRAL_V1_HF_TEMPLATE, MISTRAL_V3_TEMPLATE  # noqa: E402
from inprocess import invoke_llm  # noqa: E402
from local_kit import cli, ggufs  # noqa: E402, F401 (fixtures)
from local_kit import GREEDY, add, last_log  # noqa: E402

from _llm_mistral_suite.local.template import LocalChatFormatter


def test_system_prompt_reaches_the_model_v1_template(ggufs, cli):
    """HF's classic v1 template raises on a system role, and llama-cpp-python would swap it for its
    built-in mistral-instruct format, which drops system prompts. Ours folds it into the first user turn."""
    from llama_cpp.llama_chat_format import guess_chat_format_from_gguf_metadata

    assert guess_chat_format_from_gguf_metadata({"tokenizer.chat_template": MISTRAL_V1_HF_TEMPLATE}) == "mistral-instruct"
    add(ggufs.v1, "--name", "v1")
    result = cli("-m", "mistral-local/v1", "-s", "Speak like a pirate", "hello there", *GREEDY,
                 "-o", "max_tokens", "3", "-o", "verbose", "1")
    assert_cli_ok(result)
    rendered = result.stderr.split("chat template ---\n", 1)[1].split("\n---\n", 1)[0]
    assert rendered == "<s>[INST] Speak like a pirate\n\nhello there [/INST]"
    assert "llama_model_loader" in result.stderr or "print_info" in result.stderr  # verbose shows llama.cpp's log
    [log] = last_log()
    assert log["response_json"]["system_prompt"] == "first-user"


def test_rendering_places_system_prompt_by_mistral_rules():
    conversation = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": " reply"},
        {"role": "user", "content": "two"},
    ]
    v3 = LocalChatFormatter(MISTRAL_V3_TEMPLATE)
    assert v3.system_placement == "native" and v3.strip_assistant
    assert v3.render(conversation) == "<s>[INST] one[/INST] reply</s>[INST] SYS\n\ntwo[/INST]"

    v1 = LocalChatFormatter(MISTRAL_V1_HF_TEMPLATE)
    assert v1.system_placement == "first-user" and not v1.strip_assistant
    assert v1.render(conversation) == "<s>[INST] SYS\n\none [/INST] reply</s> [INST] two [/INST]"

    # No template in a GGUF fed as text ([INST] plain text: a v1 vocabulary): Mistral's v1 format.
    bare_v1 = LocalChatFormatter(None)
    assert bare_v1.template_source == "default" and bare_v1.system_placement == "first-user"
    assert bare_v1.render(conversation) == "<s>[INST] SYS\n\none [/INST] reply</s>[INST] two [/INST]"

    # A system-only prompt and repeated user turns still render (the templates demand alternation).
    assert "SYS" in v1.render([{"role": "system", "content": "SYS"}])
    merged = v1.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert merged == "<s>[INST] a\n\nb [/INST]"


def test_default_template_when_gguf_has_none(ggufs):
    add(ggufs.bare, "--name", "bare")
    result = invoke_llm("-m", "mistral-local/bare", "-s", "Be brief", "hello", *GREEDY, "-o", "max_tokens", "3",
                        "-o", "verbose", "1")
    assert_cli_ok(result)
    assert "<s>[INST] Be brief\n\nhello[/INST]" in result.stderr
    [log] = last_log()
    assert log["response_json"]["chat_template"] == "default"
