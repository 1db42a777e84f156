"""Local fill-in-the-middle (issue 6, last bullet): a Codestral-style GGUF through llama.cpp, with
`llm mistral fim -m mistral-local/NAME` and `llm -m mistral-local/NAME -o suffix ...`.

gguf_factory's ``fim_tokens=True`` gives a tiny model the control tokens [PREFIX]/[SUFFIX]/[MIDDLE]; the
prompt tokens handed to llama.cpp are checked in-process. Skipped without llama-cpp-python."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

import llm  # noqa: E402
from conftest import assert_cli_error, assert_cli_ok, run_llm_process  # noqa: E402
from gguf_factory import write_tiny_gguf  # noqa: E402
from inprocess import invoke_llm  # noqa: E402

from _llm_mistral_suite.local.runtime import LOADED

GREEDY = ("-o", "max_tokens", "8", "-o", "temperature", "0", "-o", "random_seed", "1")


@pytest.fixture(scope="session")
def ggufs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf-fim")
    return SimpleNamespace(fim=write_tiny_gguf(folder / "tiny-fim.gguf", fim_tokens=True, seed=4),
                           plain=write_tiny_gguf(folder / "tiny-plain.gguf", seed=5))


@pytest.fixture
def cli(llm_env):
    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return run_llm_process(*args, input=input, env=llm_env)

    return run


def add(path, name: str) -> None:
    assert_cli_ok(invoke_llm("mistral", "local", "add", str(path), "--name", name))


def test_factory_fim_tokens_leave_the_default_vocabulary_alone(tmp_path):
    import gguf

    plain = gguf.GGUFReader(write_tiny_gguf(tmp_path / "a.gguf")).fields["tokenizer.ggml.tokens"].contents()
    fim = gguf.GGUFReader(write_tiny_gguf(tmp_path / "b.gguf", fim_tokens=True)).fields["tokenizer.ggml.tokens"]
    assert fim.contents()[:8] == ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[PREFIX]", "[SUFFIX]", "[MIDDLE]"]
    assert plain[:6] == ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<0x00>"]


def test_fim_command_through_the_installed_cli(ggufs, cli):
    assert "mistral-local/tinyfim" in assert_cli_ok(cli("mistral", "local", "add", str(ggufs.fim), "--name", "tinyfim"))
    args = ("mistral", "fim", "-m", "mistral-local/tinyfim", "def f(", "--suffix", "return 1", *GREEDY)
    first = assert_cli_ok(cli(*args))
    assert first.strip() and not first.endswith("\n")  # only the middle: no newline added
    assert "def f(" not in first and "return 1" not in first
    assert assert_cli_ok(cli(*args, "--no-stream")) == first  # deterministic, streamed or not
    logs = json.loads(assert_cli_ok(invoke_llm("logs", "--json", "-n", "0")))
    assert len(logs) == 2
    for entry in logs:
        assert entry["model"] == "mistral-local/tinyfim"
        assert entry["prompt"] == "def f(" and entry["response"] == first
        assert entry["options_json"] == {"suffix": "return 1", "max_tokens": 8, "temperature": 0.0, "seed": 1}
        assert entry["output_tokens"] == 8 and entry["input_tokens"] >= 6
        assert entry["response_json"]["finish_reason"] == "length"


def test_prompt_tokens_are_codestrals_fim_format(ggufs):
    add(ggufs.fim, "tinyfim")
    model = llm.get_model("mistral-local/tinyfim")
    options = {"max_tokens": 6, "temperature": 0, "seed": 1, "n_threads": 1}
    assert model.prompt("warm up", suffix="", **options).text()
    llama = LOADED[(str(ggufs.fim), False)].llama
    seen: list[list[int]] = []
    original = llama.generate

    def spy(tokens, **kwargs):
        seen.append(list(tokens))
        return original(tokens, **kwargs)

    llama.generate = spy
    try:
        cases = [("def f(", "return 1"), ("x = ", " hello\n"), ("\n    ", "\n\nprint(x)\n"), ("a", "")]
        for prefix, suffix in cases:
            streamed = model.prompt(prefix, suffix=suffix, **options)
            assert streamed.text() == model.prompt(prefix, suffix=suffix, stream=False, **options).text()
    finally:
        llama.generate = original
    bos, prefix_id, suffix_id = 1, 5, 6
    assert llama.tokenize(b"[SUFFIX]", add_bos=False, special=True) == [suffix_id]
    for (prefix, suffix), tokens in zip(cases, seen[::2]):
        at = tokens.index(prefix_id)
        assert tokens[:2] == [bos, suffix_id] and tokens.count(prefix_id) == 1
        assert llama.detokenize(tokens[2:at]) == suffix.encode()  # no SentencePiece space before the suffix
        assert tokens[at + 1:] == llama.tokenize(prefix.encode(), add_bos=False)  # the prefix as mistral-common
    pieces = [llama._model.token_get_text(token) for token in seen[0]]
    assert pieces == ["<s>", "[SUFFIX]", "re", "turn", "\u25811", "[PREFIX]", "\u2581de", "f", "\u2581f", "("]


def test_llm_prompt_with_suffix_option(ggufs):
    add(ggufs.fim, "tinyfim")
    middle = assert_cli_ok(invoke_llm("mistral", "fim", "-m", "mistral-local/tinyfim", "for i in", "--suffix", ":",
                                      *GREEDY, "-o", "n_threads", "1"))
    out = assert_cli_ok(invoke_llm("-m", "mistral-local/tinyfim", "for i in", "-o", "suffix", ":",
                                   "-o", "max_tokens", "8", "-o", "temperature", "0", "-o", "seed", "1",
                                   "-o", "n_threads", "1"))
    assert out == middle + "\n"  # `llm prompt` ends its output with a newline


def test_no_fim_tokens_is_a_clear_error(ggufs, cli, user_dir):
    add(ggufs.plain, "plain")
    result = cli("mistral", "fim", "-m", "mistral-local/plain", "def f(", "--suffix", "return 1")
    assert result.returncode == 1
    assert_cli_error(result, "mistral-local/plain has no fill-in-the-middle tokens ([PREFIX]/[SUFFIX]); "
                             "use a Codestral GGUF or the API's codestral-fim")
    assert result.stdout == ""
    assert not (user_dir / "logs.db").exists()  # failed FIM calls are not logged


def test_option_errors(ggufs):
    add(ggufs.fim, "tinyfim")
    assert_cli_error(invoke_llm("mistral", "fim", "-m", "mistral-local/tinyfim", "a", "-o", "min_tokens", "2"),
                     "min_tokens is not supported by local models")
    assert_cli_error(invoke_llm("mistral", "fim", "-m", "mistral-local/tinyfim", "a", "-o", "max_tokens", "0"),
                     "max_tokens")
    assert_cli_error(invoke_llm("-m", "mistral-local/tinyfim", "a", "-o", "suffix", "b", "-s", "be nice"),
                     "no system prompt")
