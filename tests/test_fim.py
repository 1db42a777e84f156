"""Codestral fill-in-the-middle (issue 6): `llm mistral fim` and the `codestral-fim` model, through the CLI
against the fake Mistral server. Every FIM request body is validated against FIMCompletionRequest.

End-to-end runs use a real `llm` subprocess (``run_llm``); variations of them run the same CLI in-process
(``cli``, click's CliRunner) to keep the file quick."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok, validate_request
from fake_mistral import SSEReply, chat_stream_events, error_reply
from inprocess import invoke_llm

FIM_PATH = "/v1/fim/completions"


def fim_bodies(fake) -> list[dict]:
    """The FIM request bodies the fake received, each validated against the spec's FIMCompletionRequest."""
    found = [rec.body for rec in fake.requests if rec.path.split("?")[0] == FIM_PATH]
    for body in found:
        validate_request(body, "FIMCompletionRequest")
    return found


@pytest.fixture
def cli(cli_env):
    """``cli(*args, input=None, env=None)``: `llm` in-process against the fake, like ``run_llm``."""

    def run(*args: str, input: str | None = None, env: dict | None = None):
        return invoke_llm(*args, input=input, env=cli_env if env is None else env)

    return run


def middle(prompt: str, suffix: str = "") -> str:
    """What the fake answers to a FIM request."""
    return f"MIDDLE({len(prompt)},{len(suffix)})"


# --- llm mistral fim -------------------------------------------------------------------------------


def test_prefix_and_suffix_streamed_prints_exactly_the_middle(fake, run_llm):
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    out = assert_cli_ok(run_llm("mistral", "fim", prefix, "--suffix", suffix))
    assert out == middle(prefix, suffix)  # no trailing newline, no echo of prefix or suffix
    [body] = fim_bodies(fake)
    assert body == {"model": "codestral-latest", "prompt": prefix, "suffix": suffix, "stream": True}
    assert fake.requests[-1].headers["authorization"] == f"Bearer {SENTINEL_KEY}"


def test_no_stream_and_options(fake, cli):
    out = assert_cli_ok(cli(
        "mistral", "fim", "x = ", "--no-stream",
        "-o", "max_tokens", "64", "-o", "min_tokens", "2", "-o", "temperature", "0.2", "-o", "top_p", "0.9",
        "-o", "stop", '["\\n\\n", "def "]', "-o", "random_seed", "7",
    ))  # fmt: skip
    assert out == middle("x = ")
    [body] = fim_bodies(fake)
    assert body == {
        "model": "codestral-latest", "prompt": "x = ", "max_tokens": 64, "min_tokens": 2, "temperature": 0.2,
        "top_p": 0.9, "stop": ["\n\n", "def "], "random_seed": 7,
    }  # fmt: skip


def test_prefix_from_stdin_is_sent_verbatim(fake, run_llm):
    code = "import os\n\ndef main():\n    "
    out = assert_cli_ok(run_llm("mistral", "fim", "--suffix", "\n", input=code))
    assert out == middle(code, "\n")
    [body] = fim_bodies(fake)
    assert body["prompt"] == code and body["suffix"] == "\n"


def test_prefix_and_suffix_files(fake, cli, tmp_path):
    before, after = tmp_path / "before.py", tmp_path / "after.py"
    before.write_text("class A:\n    def f(self):\n        ")
    after.write_text("\n\n    def g(self):\n        pass\n")
    out = assert_cli_ok(cli("mistral", "fim", "--prefix-file", str(before), "--suffix-file", str(after)))
    assert out == middle(before.read_text(), after.read_text())
    [body] = fim_bodies(fake)
    assert (body["prompt"], body["suffix"]) == (before.read_text(), after.read_text())


def test_file_split_at_cursor(fake, run_llm, cli, tmp_path):
    source = tmp_path / "code.py"
    source.write_text("def f():\n    return 1\n\nx = f()\n")
    assert_cli_ok(run_llm("mistral", "fim", "--file", str(source), "--line", "2:12"))
    assert_cli_ok(cli("mistral", "fim", "--file", str(source), "--line", "3", "--no-stream"))
    first, second = fim_bodies(fake)
    assert (first["prompt"], first["suffix"]) == ("def f():\n    return ", "1\n\nx = f()\n")
    assert (second["prompt"], second["suffix"]) == ("def f():\n    return 1\n", "\nx = f()\n")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--line", "99"], "the file has 4 lines"),
        (["--line", "2:40"], "line 2 has 12 characters"),
        (["--line", "two"], "N:COL"),
        ([], "--file needs --line"),
        (["--line", "1", "--suffix", "x"], "--file gives both prefix and suffix"),
    ],
)
def test_file_cursor_errors(fake, cli, tmp_path, args, needle):
    source = tmp_path / "code.py"
    source.write_text("def f():\n    return 1\n\nx = f()\n")
    result = cli("mistral", "fim", "--file", str(source), *args)
    assert result.returncode != 0 and needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert fim_bodies(fake) == []


def test_split_at_cursor_unit():
    from _llm_mistral_suite.commands import split_at_cursor

    text = "ab\ncd\x0cef\nlast"  # a form feed does not end a line for editors
    assert split_at_cursor(text, "1") == ("", text)
    assert split_at_cursor(text, "1:3") == ("ab", "\ncd\x0cef\nlast")
    assert split_at_cursor(text, "2:4") == ("ab\ncd\x0c", "ef\nlast")
    assert split_at_cursor(text, "3:5") == (text, "")
    assert split_at_cursor("a\n", "2") == ("a\n", "")  # just after the last newline
    assert split_at_cursor("a\r\nb", "1:2") == ("a", "\r\nb")
    with pytest.raises(click.BadParameter):
        split_at_cursor(text, "5")
    with pytest.raises(click.BadParameter):
        split_at_cursor(text, "1:0")


@pytest.mark.parametrize(
    "model_args, wire",
    [
        (["-m", "codestral-2508"], "codestral-2508"),
        (["-m", "mistral/codestral-2508"], "codestral-2508"),
        (["-o", "model", "codestral-2508"], "codestral-2508"),
        (["-m", "codestral"], "codestral-latest"),
        (["-m", "codestral-fim"], "codestral-latest"),
    ],
)
def test_model_choice(fake, cli, model_args, wire):
    assert assert_cli_ok(cli("mistral", "fim", "a", *model_args)) == middle("a")
    [body] = fim_bodies(fake)
    assert body["model"] == wire


def test_logged_like_a_prompt(fake, run_llm, cli, user_dir):
    assert_cli_ok(run_llm("mistral", "fim", "def f(", "--suffix", "):", "-o", "max_tokens", "5"))
    assert_cli_ok(cli("mistral", "fim", "not logged", "-n"))
    logs = json.loads(assert_cli_ok(cli("logs", "--json", "-n", "0")))
    assert len(logs) == 1
    [entry] = logs
    assert entry["model"] == "mistral/codestral-fim"
    assert entry["prompt"] == "def f(" and entry["response"] == middle("def f(", "):")
    assert entry["options_json"] == {"suffix": "):", "max_tokens": 5}
    assert entry["resolved_model"] == "codestral-2512"  # what the fake says codestral-latest is
    assert entry["input_tokens"] and entry["output_tokens"]
    text = assert_cli_ok(cli("logs", "-n", "1"))
    assert "def f(" in text and middle("def f(", "):") in text
    raw = b"".join(p.read_bytes() for p in user_dir.glob("logs.db*"))
    assert SENTINEL_KEY.encode() not in raw


def test_codestral_fim_model_through_llm_prompt(fake, run_llm, cli):
    out = assert_cli_ok(run_llm("-m", "codestral-fim", "for i in ", "-o", "suffix", ":\n    pass", "-o", "max_tokens", "9"))
    assert out == middle("for i in ", ":\n    pass") + "\n"  # `llm prompt` ends its output with a newline
    out = assert_cli_ok(cli("-m", "codestral-fim", "x", "-o", "model", "codestral-2508", "--no-stream", "--async"))
    assert out == middle("x") + "\n"
    first, second = fim_bodies(fake)
    assert first == {"model": "codestral-latest", "prompt": "for i in ", "suffix": ":\n    pass", "max_tokens": 9,
                     "stream": True}
    assert second == {"model": "codestral-2508", "prompt": "x"}
    logs = json.loads(assert_cli_ok(cli("logs", "--json", "-n", "0")))
    assert [entry["model"] for entry in logs] == ["mistral/codestral-fim"] * 2


# --- errors ----------------------------------------------------------------------------------------


def test_model_without_fim_capability(fake, run_llm, cli):
    assert_cli_error(run_llm("mistral", "fim", "a", "-m", "mistral-large"), "mistral-large-latest",
                     "cannot fill in the middle", "codestral-latest")
    assert_cli_error(cli("-m", "codestral-fim", "a", "-o", "model", "ministral-8b"), "cannot fill in the middle")
    assert fim_bodies(fake) == []


def test_usage_errors(fake, cli, tmp_path):
    other = tmp_path / "p.py"
    other.write_text("x")
    for args in (["a", "--prefix-file", str(other)], ["a", "--suffix", "b", "--suffix-file", str(other)],
                 ["a", "--line", "3"]):
        result = cli("mistral", "fim", *args)
        assert result.returncode == 2 and "Usage:" in result.stderr, result.stderr
    assert_cli_error(cli("mistral", "fim", "a", "-o", "temperature", "9"), "temperature")
    assert_cli_error(cli("mistral", "fim", "a", "-o", "nonsense", "1"), "nonsense")
    assert_cli_error(cli("-m", "codestral-fim", "a", "-s", "be nice"), "no system prompt")
    assert fim_bodies(fake) == []


def test_no_key(fake, cli, cli_env):
    env = {k: v for k, v in cli_env.items() if k != "LLM_MISTRAL_KEY"}
    assert_cli_error(cli("mistral", "fim", "a", env=env), "llm keys set mistral")
    assert fake.requests == []
    assert_cli_error(cli("mistral", "fim", "a", "--key", "bad-key"), "401")


def test_retries_then_success(fake, cli):
    fake.queue(error_reply(503, "Service unavailable"), error_reply(429, "Rate limit", retry_after=0))
    assert assert_cli_ok(cli("mistral", "fim", "abc", "--suffix", "z")) == middle("abc", "z")
    assert len(fim_bodies(fake)) == 3


def test_errors_from_the_service(fake, cli, cli_env, user_dir):
    env = {**cli_env, "LLM_MISTRAL_MAX_ATTEMPTS": "2"}
    fake.queue(error_reply(500, "boom"), error_reply(500, "boom"))
    assert_cli_error(cli("mistral", "fim", "a", env=env), "500", "2 attempts", "boom")
    fake.queue(error_reply(422, {"detail": [{"loc": ["body", "suffix"], "msg": "bad suffix", "type": "x"}]}))
    assert_cli_error(cli("mistral", "fim", "a"), "422", "bad suffix")
    # A stream that ends with neither finish_reason nor [DONE] is incomplete: an error, after the text so far.
    events = chat_stream_events(["MID", "DLE"], "codestral-2508")[:-1]
    fake.queue(SSEReply(events, done=False))
    result = cli("mistral", "fim", "a")
    assert_cli_error(result, "ended before it was finished")
    assert result.stdout == "MID"
    assert not (user_dir / "logs.db").exists()  # failed FIM calls are not logged


# --- the retired-model guidance, as chat gives it (the sync/async twins used to hide its absence) -------


def _cache_cards(user_dir, *cards: dict) -> None:
    (user_dir / "mistral-suite-models.json").write_text(json.dumps({"data": list(cards)}))


@pytest.mark.parametrize("mode", ["stream", "no-stream", "async"])
def test_404_on_a_fim_model_with_a_successor_names_it(fake, cli, user_dir, mode):
    _cache_cards(user_dir, {"id": "codestral-2405", "capabilities": {"completion_fim": True},
                            "deprecation": "2999-01-01", "deprecation_replacement_model": "codestral-latest"})
    fake.queue(error_reply(404, "Invalid model: codestral-2405"))
    args = {"stream": [], "no-stream": ["--no-stream"], "async": ["--async"]}[mode]
    if mode == "async":  # `llm mistral fim` has no --async: go through the model with llm's own flag
        result = cli("-m", "codestral-fim", "a", "-o", "model", "codestral-2405", *args)
    else:
        result = cli("mistral", "fim", "a", "-m", "codestral-2405", *args)
    assert_cli_error(result, "no longer serves codestral-2405", "codestral-latest", "Invalid model")


def test_retired_fim_model_is_refused_before_any_request(fake, cli, user_dir):
    _cache_cards(user_dir, {"id": "codestral-2405", "capabilities": {"completion_fim": True},
                            "deprecation": "2025-01-01", "deprecation_replacement_model": "codestral-latest"})
    assert_cli_error(cli("mistral", "fim", "a", "-m", "codestral-2405"), "retired", "codestral-latest")
    assert fim_bodies(fake) == []


# --- issue 10: input that is not UTF-8 is one clear error, whatever the locale ---------------------------


@pytest.mark.parametrize("lang", ["C.UTF-8", "en_US.UTF-8"])
def test_stdin_that_is_not_utf8_is_one_clear_error(fake, cli_env, lang):
    result = subprocess.run([sys.executable, "-m", "llm", "mistral", "fim", "--suffix", ")"], input=b"print(\xff",
                            capture_output=True, env={**cli_env, "LANG": lang, "LC_ALL": lang}, timeout=60)
    completed = subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                            result.stderr.decode("utf-8", "replace"))
    assert_cli_error(completed, "standard input is not UTF-8 text", "byte 0xff at offset 6")
    assert fim_bodies(fake) == []


@pytest.mark.parametrize("option", ["--prefix-file", "--suffix-file", "--file"])
def test_files_that_are_not_utf8_are_one_clear_error(fake, cli, tmp_path, option):
    bad = tmp_path / "latin1.py"
    bad.write_bytes("s = 'café'\n".encode("latin-1"))
    args = ["mistral", "fim", option, str(bad)] + (["--line", "1"] if option == "--file" else [])
    args += ["x = "] if option == "--suffix-file" else []
    assert_cli_error(cli(*args), f"{bad} is not UTF-8 text", "byte 0xe9")
    assert fim_bodies(fake) == []


def test_windows_line_endings_are_read_as_before(fake, cli, tmp_path):
    source = tmp_path / "crlf.py"
    source.write_bytes(b"a = 1\r\nb = 2\r\n")
    assert_cli_ok(cli("mistral", "fim", "--prefix-file", str(source)))
    assert fim_bodies(fake)[0]["prompt"] == "a = 1\nb = 2\n"  # universal newlines, as text files were read
