"""Tools on local models: Mistral's tool format in the prompt, a grammar-forced call (so a random-weight model calls
validly), its parsing in both of Mistral's formats, llm's tool loop with the results sent back, and the errors."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
pytest.importorskip("mistral_common")

import llm  # noqa: E402
from conftest import assert_cli_error, assert_cli_ok  # noqa: E402
from gguf_factory import write_mistral_vocab_gguf, write_tiny_gguf  # noqa: E402
from inprocess import invoke_llm  # noqa: E402
from local_kit import ggufs  # noqa: E402, F401 (fixture)
from local_kit import add, last_log  # noqa: E402
from mistral_templates import MINISTRAL_3_2512, MISTRAL_7B_V03  # noqa: E402
from tokenizer_oracle import chat_ids  # noqa: E402

from _llm_mistral_suite.errors import MistralSuiteError  # noqa: E402
from _llm_mistral_suite.local.generate import ReplyReader  # noqa: E402
from _llm_mistral_suite.local.gguf import read_gguf_info  # noqa: E402
from _llm_mistral_suite.local.prompt import Dialect  # noqa: E402
from _llm_mistral_suite.local.runtime import LOADED, load_local_llama  # noqa: E402
from _llm_mistral_suite.local.tools import CallText, parse_calls, tool_grammar  # noqa: E402
from _llm_mistral_suite.local.vocab import MISTRAL_MARKERS  # noqa: E402

BASE = ("-o", "temperature", "0", "-o", "seed", "1", "-o", "n_threads", "1")
OPTIONS = (*BASE, "-o", "max_tokens", "40")


@pytest.fixture(scope="module")
def tool_ggufs(tmp_path_factory):
    """Mistral 7B v0.3's vocabulary and template (v3 calls), and a tekken-v13 vocabulary with Ministral 3's
    template (v13: [TOOL_CALLS]name[ARGS]{...})."""
    pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("tools")
    return {
        "v3": write_mistral_vocab_gguf(folder / "m7-tools.gguf", "v3", chat_template=MISTRAL_7B_V03),
        "v13": write_mistral_vocab_gguf(folder / "ministral3-tools.gguf", "tekken-v13", chat_template=MINISTRAL_3_2512),
    }


def tool_calls_of(log: dict) -> list[dict]:
    return log.get("tool_calls") or []


@pytest.mark.parametrize("version", ["v3", "v13"])
def test_forced_call_runs_the_tool_and_sends_the_result_back(version, tool_ggufs):
    """`llm -T llm_version -o tool_choice any`: the grammar makes even a random model call the tool; llm runs it
    and prompts again with the result, which goes back as Mistral's format wants; that reply is free (auto)."""
    add(tool_ggufs[version], "--name", "toolm")
    result = invoke_llm("-m", "mistral-local/toolm", "-T", "llm_version", "Which version of LLM is installed?",
                        "-o", "tool_choice", "any", *OPTIONS, "--td")
    assert_cli_ok(result)
    assert "llm_version" in result.stderr  # --td shows the call
    first, second = last_log(2)
    assert first["response_json"]["finish_reason"] == "tool_calls"
    [call] = tool_calls_of(first)
    assert call["name"] == "llm_version" and call["arguments"] == {}
    call_id = call["tool_call_id"]
    assert len(call_id) == 9 and call_id.isalnum()
    [tool_result] = second["tool_results"]
    assert tool_result["tool_call_id"] == call_id and tool_result["output"] == importlib.metadata.version("llm")
    assert second["response_json"]["finish_reason"] in ("length", "stop")
    # what llama.cpp read for the second prompt: the call and its result as mistral-common writes them
    llama = LOADED[(str(tool_ggufs[version]), False)].llama
    vocab = LOADED[(str(tool_ggufs[version]), False)].vocab
    evaluated = vocab.show(list(llama.eval_tokens))
    if version == "v3":
        assert f'[TOOL_CALLS] [{{"name": "llm_version", "arguments": {{}}, "id": "{call_id}"}}]</s>' in evaluated
        assert '[TOOL_RESULTS] {"content": ' in evaluated and f'"call_id": "{call_id}"}}[/TOOL_RESULTS]' in evaluated
    else:
        assert "[TOOL_CALLS]llm_version[ARGS]{}</s>[TOOL_RESULTS]" in evaluated
        assert call_id not in evaluated  # v13 writes no call ids


def test_prompt_with_tools_matches_mistral_common(tool_ggufs):
    add(tool_ggufs["v3"], "--name", "toolm")
    model = llm.get_model("mistral-local/toolm")

    def weather(city: str) -> str:
        "Get the weather"
        return "sunny"

    response = model.prompt("Weather in Paris?", tools=[weather], system="Be brief.", max_tokens=2, temperature=0,
                            n_threads=1)
    response.text()
    tools = [{"type": "function", "function": {"name": "weather", "description": "Get the weather",
                                               "parameters": llm.Tool.function(weather).input_schema}}]
    expected = chat_ids("v3", [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Weather in Paris?"}], tools)
    llama = LOADED[(str(tool_ggufs["v3"]), False)].llama
    assert list(llama.eval_tokens)[: len(expected)] == expected


def test_forced_tool_by_name_with_arguments_matching_its_schema(tool_ggufs):
    add(tool_ggufs["v13"], "--name", "toolm")
    model = llm.get_model("mistral-local/toolm")

    pick = llm.Tool(name="pick", description="Pick a colour", implementation=lambda colour, count: "ok", input_schema={
        "type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]},
                                         "count": {"type": "integer"}}, "required": ["colour", "count"]})

    def other() -> str:
        "Another tool"
        return "x"

    response = model.prompt("Choose", tools=[other, pick], tool_choice="pick", temperature=0, seed=3, n_threads=1,
                            max_tokens=100)
    response.text()
    [call] = response.tool_calls()
    assert call.name == "pick" and set(call.arguments) == {"colour", "count"}
    assert call.arguments["colour"] in ("red", "green", "blue") and isinstance(call.arguments["count"], int)


def test_tool_choice_none_and_auto_leave_a_random_model_answering(tool_ggufs):
    add(tool_ggufs["v3"], "--name", "toolm")
    for choice in ("none", "auto"):
        out = assert_cli_ok(invoke_llm("-m", "mistral-local/toolm", "-T", "llm_version", "hi",
                                       "-o", "tool_choice", choice, *BASE, "-o", "max_tokens", "4"))
        assert out.strip()
        [log] = last_log()
        assert not tool_calls_of(log) and log["response_json"]["finish_reason"] == "length"


def test_verbose_shows_the_tools_in_the_prompt(tool_ggufs):
    add(tool_ggufs["v3"], "--name", "toolm")
    result = invoke_llm("-m", "mistral-local/toolm", "-T", "llm_version", "hi", *BASE, "-o", "max_tokens", "2",
                        "-o", "verbose", "1")
    assert_cli_ok(result)
    assert '[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "llm_version"' in result.stderr
    assert "[/AVAILABLE_TOOLS][INST] hi[/INST]" in result.stderr


def test_tool_errors(ggufs, tool_ggufs):
    add(ggufs.dense, "--name", "plain")  # Mistral's format, but no tool tokens and a template without tools
    assert_cli_error(invoke_llm("-m", "mistral-local/plain", "-T", "llm_version", "hi", "-o", "n_threads", "1"),
                     "mistral-local/plain cannot use tools")
    add(ggufs.v1, "--name", "v1")  # a v1 model: its prompt is text
    assert_cli_error(invoke_llm("-m", "mistral-local/v1", "-T", "llm_version", "hi", "-o", "n_threads", "1"),
                     "mistral-local/v1 cannot use tools")
    add(tool_ggufs["v3"], "--name", "toolm")
    assert_cli_error(invoke_llm("-m", "mistral-local/toolm", "-T", "llm_version", "hi", "-o", "tool_choice", "nope"),
                     "tool_choice 'nope' is not one of the tools", "llm_version")
    assert_cli_error(invoke_llm("-m", "mistral-local/toolm", "hi", "-o", "tool_choice", "any"), "needs tools")
    # a forced call that max_tokens cuts off is an error, not a half call
    assert_cli_error(invoke_llm("-m", "mistral-local/toolm", "-T", "llm_version", "hi", "-o", "tool_choice", "any",
                                "-o", "max_tokens", "3", "-o", "n_threads", "1"),
                     "max_tokens (3) in the middle of a tool call")


def test_local_list_says_tools_as_a_prompt_decides(ggufs, tool_ggufs, tmp_path):
    """`llm mistral local list` once read "tools" from the template's text alone: a GGUF without a template whose
    vocabulary has the tool tokens takes tools, and one whose template names them without the tokens does not."""
    models = {
        "toolm": tool_ggufs["v3"], "tekken": tool_ggufs["v13"], "plain": ggufs.dense, "v1": ggufs.v1,
        "bare": write_mistral_vocab_gguf(tmp_path / "m7-no-template.gguf", "v3"),
        "named": write_tiny_gguf(tmp_path / "tiny-m7-template.gguf", chat_template=MISTRAL_7B_V03, seed=4),
    }
    for name, path in models.items():
        add(path, "--name", name)
    rows = json.loads(assert_cli_ok(invoke_llm("mistral", "local", "list", "--json")))
    listed = {row["name"]: row["tools"] for row in rows}
    assert listed == {"toolm": True, "tekken": True, "bare": True, "plain": False, "v1": False, "named": False}
    for name, path in models.items():  # what a prompt does with the loaded model
        loaded = load_local_llama(str(path), n_threads=1)
        assert read_gguf_info(path, MISTRAL_MARKERS).control_tokens == loaded.vocab.markers, name
        assert listed[name] == bool(loaded.dialect and loaded.dialect.tools), name
    text = assert_cli_ok(invoke_llm("mistral", "local", "list"))
    bare = text[text.index("mistral-local/bare"):]
    assert "tools" in bare.splitlines()[1]


# --- reading the model's output ---------------------------------------------------------------------------


def calls(*parts: tuple[str, str, str]) -> list[CallText]:
    made = []
    for head, call_id, args in parts:
        call = CallText()
        call.head, call.id, call.args = head, call_id, args
        call.part = "args" if args or call_id else "head"
        made.append(call)
    return made


def test_parse_both_formats():
    names = {"get_weather", "llm_version"}
    v3 = parse_calls(calls((' [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}, '
                            '{"name": "llm_version", "arguments": "{}"}]', "", "")), "m", names)
    assert [(c.name, c.arguments) for c in v3] == [("get_weather", {"city": "Paris"}), ("llm_version", {})]
    assert v3[0].id == "abcDEF123" and len(v3[1].id) == 9 and v3[1].id.isalnum()
    v11 = parse_calls(calls(("get_weather", "abcDEF123", '{"city": "Paris"}'), ("llm_version", "", "{}")), "m", names)
    assert [(c.name, c.arguments, len(c.id)) for c in v11] == [("get_weather", {"city": "Paris"}, 9), ("llm_version", {}, 9)]
    assert v11[0].id == "abcDEF123"
    with pytest.raises(MistralSuiteError, match="not valid JSON"):
        parse_calls(calls(('[{"name": "get_weather", "arguments": {"city": ', "", "")), "m", names)
    with pytest.raises(MistralSuiteError, match="not valid JSON"):
        parse_calls(calls(("get_weather", "", "{oops")), "m", names)
    with pytest.raises(MistralSuiteError, match="called a tool it was not given: 'rm_rf'"):
        parse_calls(calls(("rm_rf", "", "{}")), "m", names)


def test_reader_sorts_text_reasoning_and_calls(tool_ggufs):
    loaded = load_local_llama(str(tool_ggufs["v13"]), n_threads=1)
    vocab = loaded.vocab
    marker = vocab.marker
    reader = ReplyReader(vocab)
    tokens = [marker("[THINK]"), *vocab.text("Let me see."), marker("[/THINK]"), *vocab.text("Sure. "),
              marker("[TOOL_CALLS]"), *vocab.text("get_weather"), marker("[ARGS]"), *vocab.text('{"city": "Paris"}')]
    events = [event for token in tokens for event in reader.feed(token)] + reader.close()
    reasoning = "".join(e.chunk for e in events if not isinstance(e, str) and e.type == "reasoning")
    text = "".join(e for e in events if isinstance(e, str))
    assert (reasoning, text) == ("Let me see.", "Sure. ")
    assert [(c.head, c.args) for c in reader.calls] == [("get_weather", '{"city": "Paris"}')]


def test_reader_stop_strings_and_split_characters(tool_ggufs):
    vocab = load_local_llama(str(tool_ggufs["v13"]), n_threads=1).vocab
    reader = ReplyReader(vocab, ("END",))
    tokens = vocab.text("café, then EN") + vocab.text("D and more")
    shown = [event for token in tokens for event in reader.feed(token) if not reader.stopped or event] + reader.close()
    assert "".join(shown) == "café, then " and reader.stopped
    # a character split over byte tokens waits for its last byte
    reader = ReplyReader(vocab)
    pieces = [vocab.piece(token) for token in vocab.text("😀")]
    assert "".join(event for token in vocab.text("😀") for event in reader.feed(token)) + "".join(reader.close()) == "😀"
    assert len(b"".join(pieces)) == 4


def test_grammars(tool_ggufs):
    vocab = load_local_llama(str(tool_ggufs["v13"]), n_threads=1).vocab
    tools = [{"type": "function", "function": {"name": "t", "description": "", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}]
    v3, v13 = Dialect("v3", True, False, ""), Dialect("v13", True, False, "")
    calls_id, args_id = vocab.marker("[TOOL_CALLS]"), vocab.marker("[ARGS]")
    assert tool_grammar(None, tools, v3, vocab, "m") is None and tool_grammar("auto", tools, v3, vocab, "m") is None
    assert tool_grammar("none", tools, v3, vocab, "m") == f"root ::= ( !<[{calls_id}]> )*"
    assert f"root ::= <[{calls_id}]>" in tool_grammar("any", tools, v3, vocab, "m")
    assert f'"t" <[{args_id}]>' in tool_grammar("t", tools, v13, vocab, "m")
    with pytest.raises(MistralSuiteError, match="tool_choice 'x' is not one of the tools given to m: t"):
        tool_grammar("x", tools, v13, vocab, "m")
    json.dumps(tools)  # unchanged by the grammar's strict copy
    assert "additionalProperties" not in tools[0]["function"]["parameters"]


def test_thinking_goes_to_llms_reasoning_and_comes_back_in_think_tokens(tool_ggufs, monkeypatch):
    """A Magistral-style reply ([THINK]...[/THINK] answer): the thinking is llm's reasoning (not the answer), and
    on the next turn it is written back between [THINK] tokens. The sampled tokens are scripted here (a
    random-weight model never chooses [THINK]); everything around them is the real path."""
    from mistral_templates import MAGISTRAL_TEST_TEMPLATE

    path = write_mistral_vocab_gguf(tool_ggufs["v13"].with_name("magistral.gguf"), "tekken-v13",
                                    chat_template=MAGISTRAL_TEST_TEMPLATE)
    add(path, "--name", "magistral")
    loaded = load_local_llama(str(path), n_threads=1)
    vocab = loaded.vocab
    assert loaded.dialect.think and loaded.dialect.version == "v13"
    script = [vocab.marker("[THINK]"), *vocab.text("Two and two."), vocab.marker("[/THINK]"), *vocab.text("4"),
              vocab.eos]
    seen: list[list[int]] = []
    real_generate = loaded.llama.generate

    def scripted(tokens, **kwargs):
        seen.append(list(tokens))
        for token in real_generate(tokens, **kwargs):  # evaluates the prompt; the tokens are ours
            break
        yield from script

    monkeypatch.setattr(loaded.llama, "generate", scripted)
    model = llm.get_model("mistral-local/magistral")
    conversation = model.conversation()
    response = conversation.prompt("2+2?", n_threads=1)
    assert response.text() == "4"
    [message] = response.messages()
    assert [type(part).__name__ for part in message.parts][:2] == ["ReasoningPart", "TextPart"]
    assert message.parts[0].text == "Two and two."
    conversation.prompt("And 3+3?", n_threads=1).text()
    second = vocab.show(seen[1])
    assert "[/INST][THINK]Two and two.[/THINK]4</s>[INST]And 3+3?[/INST]" in second
    assert seen[1][: len(seen[0])] == seen[0]  # the next prompt extends the first: the reply's own tokens


def test_functions_option_through_the_cli(tool_ggufs, tmp_path):
    """`--functions` (Python functions as tools) takes the same path as -T: a forced call runs the function."""
    add(tool_ggufs["v13"], "--name", "toolm")
    result = invoke_llm("-m", "mistral-local/toolm", "--functions", "def double(n: int) -> int:\n    return 2 * n",
                        "Double something", "-o", "tool_choice", "double", *OPTIONS, "--td")
    assert_cli_ok(result)
    first, second = last_log(2)
    [call] = tool_calls_of(first)
    assert call["name"] == "double" and isinstance(call["arguments"]["n"], int)
    [tool_result] = second["tool_results"]
    assert tool_result["output"] == str(2 * call["arguments"]["n"])
