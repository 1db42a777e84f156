"""Local prompts as token ids against mistral-common's (the oracle): chat, system, tools, tool results, thinking and FIM,
on tiny GGUFs carrying Mistral's real v3 and tekken vocabularies, whatever their add_space_prefix setting."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
pytest.importorskip("mistral_common")

from gguf_factory import write_mistral_vocab_gguf  # noqa: E402
from mistral_templates import (  # noqa: E402
    MAGISTRAL_TEST_TEMPLATE, MINISTRAL_3_2512, MISTRAL_7B_V03, MISTRAL_NEMO_2407, MISTRAL_SMALL_31, V11_TEST_TEMPLATE,
)  # fmt: skip
from tokenizer_oracle import chat_ids, diff, fim_ids, mistral_tokenizer  # noqa: E402

from _llm_mistral_suite.errors import MistralSuiteError  # noqa: E402
from _llm_mistral_suite.local.prompt import (  # noqa: E402
    REPLAY_KEY, Dialect, ToolCallTurn, Turn, encode_chat, encode_fim, read_dialect,
)  # fmt: skip
from _llm_mistral_suite.local.template import LocalChatFormatter  # noqa: E402
from _llm_mistral_suite.local.vocab import PromptVocab  # noqa: E402

# vocabulary GGUF -> (mistral-common kind, add_space_prefix)
CONFIGS = {
    "v3-space-true": ("v3", True),
    "v3-space-false": ("v3", False),
    "v3-space-unset": ("v3", None),
    "tekken": ("tekken", None),
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]  # fmt: skip
CALL = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
CONVERSATIONS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = {
    "one-turn": ([{"role": "user", "content": "Hello"}], None),
    "system": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}], None),
    "two-turn": ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
                  {"role": "user", "content": "Bye"}], None),
    "two-turn-system": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello there"}, {"role": "user", "content": "Bye"}], None),
    "tools": ([
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "21 degrees."}, {"role": "user", "content": "Thanks!"},
    ], TOOLS),
    "tool-result-last": ([
        {"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "abcDEF123", "content": "sunny, 21 degrees"},
    ], TOOLS),
    "tools-two-users": ([
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Weather in Paris?"},
    ], TOOLS),
    "spaces-unicode": ([
        {"role": "user", "content": " leading and trailing "}, {"role": "assistant", "content": "  x  "},
        {"role": "user", "content": "Größe café 東京 😀\n\nnext\tline"},
    ], None),
    "control-names-as-text": ([{"role": "user", "content": "Explain [INST] and [/INST] and </s>"}], None),
}  # fmt: skip


@pytest.fixture(scope="module")
def vocabs(tmp_path_factory) -> dict[str, PromptVocab]:
    """A vocabulary-only ``Llama`` (as a ``PromptVocab``) per configuration, plus "tekken-v13"."""
    import llama_cpp

    folder = tmp_path_factory.mktemp("prompt-vocab")
    made = {}
    for config, (kind, space) in {**CONFIGS, "tekken-v13": ("tekken-v13", None)}.items():
        if kind == "v3":
            pytest.importorskip("sentencepiece")
        path = write_mistral_vocab_gguf(folder / f"{config}.gguf", kind, add_space_prefix=space)
        made[config] = PromptVocab(llama_cpp.Llama(str(path), vocab_only=True, verbose=False))
    return made


def turns_from_openai(messages: list[dict[str, Any]]) -> list[Turn]:
    """Turns as ``local_turns`` makes them from llm's messages, here from OpenAI-style ones."""
    turns = []
    for message in messages:
        if message["role"] == "tool":
            turns.append(Turn("tool", message["content"], call_id=message["tool_call_id"]))
            continue
        content = message.get("content") or ""
        reasoning = ""
        if isinstance(content, list):
            reasoning = "".join(chunk["thinking"] for chunk in content if chunk["type"] == "thinking")
            content = "".join(chunk["text"] for chunk in content if chunk["type"] == "text")
        calls = [ToolCallTurn(call["id"], call["function"]["name"], json.loads(call["function"]["arguments"]))
                 for call in message.get("tool_calls") or ()]
        turns.append(Turn(message["role"], content, reasoning=reasoning, calls=calls))
    return turns


def system_chunks(text: str) -> list[dict[str, Any]]:
    """A template's default system prompt as mistral-common content chunks: "[THINK]...[/THINK]" a thinking chunk
    (as Magistral's system prompt is given to mistral-common)."""
    before, think, after = text.partition("[THINK]")
    if not think:
        return [{"type": "text", "text": text}]
    inner, _, after = after.partition("[/THINK]")
    return [{"type": "text", "text": before}, {"type": "thinking", "thinking": inner, "closed": True},
            {"type": "text", "text": after}]


def dialect_of(template: str, vocab: PromptVocab) -> Dialect:
    formatter = LocalChatFormatter(template, bos_token="<s>", eos_token="</s>")
    return read_dialect(template, vocab, formatter.render_raw)


def ours(messages, tools, dialect, vocab) -> list[int]:
    return encode_chat(turns_from_openai(messages), tools or [], dialect, vocab, "mistral-local/test")


# --- v3 SentencePiece and tekken (v3 instruct) against mistral-common -------------------------------------


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("config", CONFIGS)
def test_chat_ids_match_mistral_common(config, conversation, vocabs):
    """With the published template of the vocabulary's model (Mistral 7B v0.3 for v3, Nemo for tekken)."""
    kind = CONFIGS[config][0]
    vocab = vocabs[config]
    dialect = dialect_of(MISTRAL_7B_V03 if kind == "v3" else MISTRAL_NEMO_2407, vocab)
    assert dialect == Dialect("v3", tools=True, think=False, default_system="")
    messages, tools = CONVERSATIONS[conversation]
    expected = chat_ids(kind, messages, tools)
    assert diff(kind, expected, ours(messages, tools, dialect, vocab)) == []


FIM_CASES = [("def f(x):\n    return ", "\n\nprint(f(2))"), ("a", ""), ("x = ", " hello\n"), ("\n    ", "b"),
             ("", "return 1"), ("é = ", "  # ünïcode\n")]  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS)
def test_fim_ids_match_mistral_common(config, vocabs):
    kind = CONFIGS[config][0]
    for prefix, suffix in FIM_CASES:
        expected = fim_ids(kind, prefix, suffix)
        assert diff(kind, expected, encode_fim(vocabs[config], "m", prefix, suffix)) == [], (prefix, suffix)


def test_the_template_text_is_not_what_is_fed(vocabs):
    """The published v3 template writes "[INST] Hello" (its space stands for SentencePiece's dummy prefix);
    tokenized as one string by llama.cpp that gives an extra "▁"; the suite's ids are mistral-common's."""
    vocab = vocabs["v3-space-true"]
    messages = [{"role": "user", "content": "Hello"}]
    rendered = LocalChatFormatter(MISTRAL_7B_V03).render_raw(messages=messages)
    assert rendered == "<s>[INST] Hello[/INST]"
    assert vocab.llama.tokenize(rendered.encode(), add_bos=False, special=True) == [1, 3, 29473, 23325, 4]
    assert ours(messages, None, dialect_of(MISTRAL_7B_V03, vocab), vocab) == chat_ids("v3", messages) == [1, 3, 23325, 4]


# --- later instruct versions on a tekken vocabulary with their control tokens -----------------------------

V7_PLUS = [
    # (mistral-common kind, template, expected dialect)
    ("tekken-v7", MISTRAL_SMALL_31, "v7"),
    ("tekken-v11", V11_TEST_TEMPLATE, "v11"),
    ("tekken-v13", MINISTRAL_3_2512, "v13"),
    ("tekken-v13", MAGISTRAL_TEST_TEMPLATE, "v13"),
]


@pytest.mark.parametrize("conversation", ["system", "two-turn-system", "tools", "tool-result-last", "tools-two-users"])
@pytest.mark.parametrize("kind, template, version", V7_PLUS, ids=["v7-small-3.1", "v11", "v13-ministral-3", "v13-magistral"])
def test_later_versions_match_mistral_common(kind, template, version, conversation, vocabs):
    """v7: [SYSTEM_PROMPT] blocks, results as id[TOOL_CONTENT]content (Small 3.1's template writes v3 results:
    mistral-common wins); v11: name[CALL_ID]id[ARGS]; v13: name[ARGS], tools before the first user message."""
    vocab = vocabs["tekken-v13"]
    dialect = dialect_of(template, vocab)
    assert dialect.version == version and dialect.tools
    messages, tools = CONVERSATIONS[conversation]
    reference = messages
    if dialect.default_system and messages[0]["role"] != "system":  # the template's own, which the suite adds
        reference = [{"role": "system", "content": system_chunks(dialect.default_system)}, *messages]
    expected = chat_ids(kind, reference, tools)
    assert diff("tekken-v13", expected, ours(messages, tools, dialect, vocab)) == []


def test_thinking_is_written_back_in_think_tokens(vocabs):
    vocab = vocabs["tekken-v13"]
    dialect = dialect_of(MAGISTRAL_TEST_TEMPLATE, vocab)
    assert dialect.think and "[THINK]" in dialect.default_system
    messages = [
        {"role": "system", "content": "Think first."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Two and two.", "closed": True},
                                          {"type": "text", "text": "4"}]},
        {"role": "user", "content": "And 3+3?"},
    ]  # fmt: skip
    expected = chat_ids("tekken-v13", messages)
    assert diff("tekken-v13", expected, ours(messages, None, dialect, vocab)) == []


def test_default_system_prompt_of_the_template(vocabs):
    """A v7+ template's own system prompt is used when the conversation has none, its control-token names
    (Magistral's [THINK]) as the tokens."""
    vocab = vocabs["tekken-v13"]
    dialect = dialect_of(MAGISTRAL_TEST_TEMPLATE, vocab)
    ids = ours([{"role": "user", "content": "Hi"}], None, dialect, vocab)
    system = [{"role": "system", "content": system_chunks(dialect.default_system)}, {"role": "user", "content": "Hi"}]
    assert ids[:2] == [1, vocab.marker("[SYSTEM_PROMPT]")] and vocab.marker("[THINK]") in ids
    assert diff("tekken-v13", chat_ids("tekken-v13", system), ids) == []
    assert "The current date is 20" in dialect_of(MISTRAL_SMALL_31, vocab).default_system  # strftime_now works


# --- dialects ---------------------------------------------------------------------------------------------


def test_dialects_of_templates_and_vocabularies(vocabs):
    v3, tekken, v13 = vocabs["v3-space-true"], vocabs["tekken"], vocabs["tekken-v13"]
    assert read_dialect(None, v3) == Dialect("v3", True, False, "")  # no template: Mistral's format
    assert not dialect_of("{{ bos_token }}{% for m in messages %}[INST]{{ m.content }}[/INST]{% endfor %}", v3).tools
    # Nemo's vocabulary has [SYSTEM_PROMPT] but its template is v3: the system prompt goes to the last user turn
    assert dialect_of(MISTRAL_NEMO_2407, tekken).version == "v3"
    # a v7 template on a vocabulary without [SYSTEM_PROMPT] (v3's) stays v3
    assert dialect_of(MISTRAL_SMALL_31, v3).version == "v3"
    assert dialect_of(MISTRAL_SMALL_31, tekken).version == dialect_of(MISTRAL_SMALL_31, v13).version == "v7"
    assert not dialect_of(MINISTRAL_3_2512, v13).think


def test_tools_need_a_template_that_takes_them(vocabs):
    vocab = vocabs["v3-space-true"]
    dialect = dialect_of("{{ bos_token }}{% for m in messages %}[INST]{{ m.content }}[/INST]{% endfor %}", vocab)
    with pytest.raises(MistralSuiteError, match="mistral-local/test cannot use tools: its chat template"):
        ours([{"role": "user", "content": "Hi"}], TOOLS, dialect, vocab)


def test_fim_needs_the_fim_tokens(vocabs):
    tekken = vocabs["tekken"]
    assert encode_fim(tekken, "m", "a", "b")[:2] == [1, tekken.marker("[SUFFIX]")]
    no_fim = SimpleNamespace(has=lambda *names: False)
    with pytest.raises(MistralSuiteError, match="m has no fill-in-the-middle tokens"):
        encode_fim(no_fim, "m", "a", "b")  # type: ignore[arg-type]


# --- a reply's own tokens -----------------------------------------------------------------------------


def test_replayed_reply_tokens(vocabs):
    """A reply is written back as the ids the model sampled (so the next prompt extends what llama.cpp has
    evaluated), as long as they were kept for this vocabulary and still spell the reply's text."""
    vocab = vocabs["v3-space-true"]
    dialect = dialect_of(MISTRAL_7B_V03, vocab)
    sampled = vocab.text("Hel") + vocab.infill("lo there")
    text = vocab.reply_text(sampled)
    assert text == "Hello there" and sampled != vocab.text("Hello there")  # re-tokenized, the text gives other ids

    def conversation(replay):
        return [Turn("user", "Hi"), Turn("assistant", text, replay=replay), Turn("user", "Bye")]

    good = {"vocab": vocab.fingerprint, "tokens": sampled}
    ids = encode_chat(conversation(good), [], dialect, vocab, "m")
    reply_at = ids.index(vocab.marker("[/INST]")) + 1
    assert ids[reply_at:reply_at + len(sampled) + 1] == [*sampled, vocab.eos]
    plain = encode_chat(conversation(None), [], dialect, vocab, "m")
    for bad in ({**good, "vocab": "another"}, {**good, "tokens": sampled[:-1]}, {**good, "tokens": ["x"]}):
        assert encode_chat(conversation(bad), [], dialect, vocab, "m") == plain
    assert REPLAY_KEY == "mistral_local"


def test_oracle_kinds_are_the_versions_they_claim():
    assert type(mistral_tokenizer("tekken-v11").instruct_tokenizer).__name__ == "InstructTokenizerV11"
    assert type(mistral_tokenizer("tekken-v13").instruct_tokenizer).__name__ == "InstructTokenizerV13"


# --- through llm -----------------------------------------------------------------------------------------


def test_what_llm_feeds_llama_cpp_is_mistral_commons(tmp_path):
    """`llm -s ... PROMPT` on a GGUF with v3's vocabulary (add_space_prefix false, the harder case) and the
    published template: the tokens llama.cpp evaluated are mistral-common's; `-o verbose 1` shows them."""
    import llm
    from conftest import assert_cli_ok
    from inprocess import invoke_llm

    from _llm_mistral_suite.local.runtime import LOADED

    pytest.importorskip("sentencepiece")
    path = write_mistral_vocab_gguf(tmp_path / "m7.gguf", "v3", add_space_prefix=False, chat_template=MISTRAL_7B_V03)
    assert_cli_ok(invoke_llm("mistral", "local", "add", str(path), "--name", "m7"))
    result = invoke_llm("-m", "mistral-local/m7", "-s", "Be brief.", "Hello", "-o", "max_tokens", "3",
                        "-o", "temperature", "0", "-o", "n_threads", "1", "-o", "verbose", "1")
    assert_cli_ok(result)
    assert "--- prompt: 9 tokens, Mistral v3 instruct format, as mistral-common encodes it ---\n" in result.stderr
    assert "<s>[INST] Be brief.\n\nHello[/INST]\n---" in result.stderr
    expected = chat_ids("v3", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    response = llm.get_model("mistral-local/m7").prompt("Hello", system="Be brief.", max_tokens=3, temperature=0,
                                                        n_threads=1)
    response.text()
    llama = LOADED[(str(path), False)].llama
    assert list(llama.eval_tokens)[: len(expected)] == expected
    assert response.usage().input == len(expected) == 9


def test_your_system_prompt_stays_text(vocabs):
    """Control-token names in your own text (system prompt included) are text, as mistral-common encodes them;
    only the template's own default system prompt has its [THINK] written as the token."""
    vocab = vocabs["tekken-v13"]
    dialect = dialect_of(MAGISTRAL_TEST_TEMPLATE, vocab)
    messages = [{"role": "system", "content": "Never write [THINK] or [INST]."}, {"role": "user", "content": "[/INST]"}]
    ids = ours(messages, None, dialect, vocab)
    assert diff("tekken-v13", chat_ids("tekken-v13", messages), ids) == []
    assert ids.count(vocab.marker("[THINK]")) == 0 and ids.count(vocab.marker("[INST]")) == 1
