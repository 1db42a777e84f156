"""API keys as settings.py and servers.py read them: whitespace a paste leaves is dropped, a key a header cannot
carry is refused before anything is sent, showing at most its first 4 characters (issue 10, item 1); and URLs as
they are printed, a password masked (item 6)."""

from __future__ import annotations

import json

import pytest

from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok
from inprocess import invoke_llm

from _llm_mistral_suite import settings
from _llm_mistral_suite.errors import MistralSuiteError

GOOD = "sk-GOODKEY-5e2a"
BROKEN = {  # a key as a paste or a typo can leave it -> what the error calls the bad character
    "inner space": ("sk-GOOD KEY-5e2a", "a space"),
    "inner tab": ("sk-GOOD\tKEY-5e2a", r"'\t'"),
    "newline inside": ("sk-GOOD\nKEY-5e2a", r"'\n'"),
    "non-ASCII": ("sk-GOODKÉY-5e2a", "a non-ASCII character"),
    "control": ("sk-GOOD\x7fKEY-5e2a", r"'\x7f'"),
}


def prompt_args(command: str) -> tuple[str, ...]:
    return {
        "chat": ("-m", "mistral-small", "hi"),
        "async": ("-m", "mistral-small", "hi", "--async"),
        "embed": ("embed", "-m", "mistral-embed", "-c", "hi"),
        "fim": ("mistral", "fim", "def f(", "--suffix", ")"),
    }[command]


@pytest.fixture
def api(fake, monkeypatch):
    """In-process `llm` runs against the fake Mistral server."""
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    return fake


def sent_keys(fake) -> set[str]:
    return {rec.headers.get("authorization") for rec in fake.requests}


@pytest.mark.parametrize("source, pasted", [
    ("keys set", f"{GOOD} "), ("LLM_MISTRAL_KEY", f"{GOOD}\t"), ("MISTRAL_API_KEY", f" {GOOD}\r\n"),
    ("--key", f"{GOOD}\t"),
])  # fmt: skip
def test_whitespace_around_a_key_is_dropped(api, source, pasted):
    args: tuple[str, ...] = ("-m", "mistral-small", "hi")
    env: dict[str, str] = {}
    if source == "keys set":
        assert_cli_ok(invoke_llm("keys", "set", "mistral", "--value", pasted))
    elif source == "--key":
        args += ("--key", pasted)
    else:
        env[source] = pasted
    assert assert_cli_ok(invoke_llm(*args, env=env)) == "echo: hi\n"
    assert sent_keys(api) == {f"Bearer {GOOD}"}


def test_a_key_piped_to_keys_set_with_its_newline_works(run_llm, cli_env, fake):
    """`printf 'KEY \\n' | llm keys set mistral`, end to end."""
    env = {name: value for name, value in cli_env.items() if name != "LLM_MISTRAL_KEY"}
    assert_cli_ok(run_llm("keys", "set", "mistral", input=f"{GOOD} \n", env=env))
    assert_cli_ok(run_llm("-m", "mistral-small", "hi", env=env))
    assert sent_keys(fake) == {f"Bearer {GOOD}"}


@pytest.mark.parametrize("command, case", [("chat", case) for case in BROKEN] + [
    (command, "inner tab") for command in ("async", "embed", "fim")
])  # fmt: skip
def test_a_key_a_header_cannot_carry_is_refused_before_sending(api, command, case):
    key, what = BROKEN[case]
    result = invoke_llm(*prompt_args(command), env={"LLM_MISTRAL_KEY": key})
    line = assert_cli_error(result, "LLM_MISTRAL_KEY", what, "'sk-G...'", "cannot be sent")
    assert key[4:] not in result.stdout + result.stderr and "GOODK" not in line  # 4 characters at most
    assert api.requests == []  # nothing was sent, so nothing was retried as a "network failure"


def test_a_broken_key_from_each_source_names_its_source(api):
    key = BROKEN["inner space"][0]
    assert_cli_error(invoke_llm("-m", "mistral-small", "hi", "--key", key), "--key")
    assert_cli_ok(invoke_llm("keys", "set", "mistral", "--value", key))
    assert_cli_error(invoke_llm("-m", "mistral-small", "hi"), "llm keys set mistral")
    assert api.requests == []


def test_a_non_ascii_key_is_one_error_end_to_end(run_llm, cli_env, fake):
    """It used to end in a UnicodeEncodeError traceback from deep inside httpx."""
    result = run_llm("-m", "mistral-small", "hi", env={**cli_env, "LLM_MISTRAL_KEY": "sk-ÜBERKEY-5e2a"})
    assert_cli_error(result, "non-ASCII", "'sk-Ü...'")
    assert fake.requests == []


def test_server_keys_are_cleaned_and_checked_too(api):
    assert_cli_ok(invoke_llm("mistral", "servers", "add", "box", api.base_url, "--model", "m", "--key-name", "boxkey"))
    assert_cli_ok(invoke_llm("keys", "set", "boxkey", "--value", f"{GOOD}\n"))
    assert_cli_ok(invoke_llm("-m", "box", "hi"))
    assert sent_keys(api) == {f"Bearer {GOOD}"}
    api.requests.clear()
    assert_cli_ok(invoke_llm("keys", "set", "boxkey", "--value", "box key"))
    assert_cli_error(invoke_llm("-m", "box", "hi"), "llm keys set boxkey", "a space", "'box ...'")
    assert_cli_error(invoke_llm("-m", "box", "hi", "--key", "tab\tkey"), "--key", r"'\t'")
    assert api.requests == []


def test_usable_key_shows_no_more_than_four_characters():
    assert settings.usable_key(f"  {SENTINEL_KEY}\n", "x", "") == SENTINEL_KEY
    assert settings.usable_key(" \t\n", "x", "") is None
    with pytest.raises(MistralSuiteError) as info:
        settings.usable_key("ab c", "x", "")
    assert "ab c" not in str(info.value) and "ab" not in str(info.value).split("It starts")[1]


def test_mistral_key_order_is_kept(monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "from-mistral-api-key")
    assert settings.mistral_key(None) == "from-mistral-api-key"
    monkeypatch.setenv("LLM_MISTRAL_KEY", " from-llm-mistral-key ")
    assert settings.mistral_key(None) == "from-llm-mistral-key"
    assert settings.mistral_key(" explicit ") == "explicit"


def test_a_key_assigned_to_the_model_is_used_as_llm_does(api, monkeypatch):
    """llm's own models take ``model.key = ...`` before any other key; ours do too, for every kind of model."""
    import llm

    monkeypatch.setenv("LLM_MISTRAL_KEY", "from-environment")
    chat, embed, fim = llm.get_model("mistral-small"), llm.get_embedding_model("mistral-embed"), llm.get_model("codestral-fim")
    for model in (chat, embed, fim):
        model.key = f" {GOOD}\n"
    chat.prompt("hi", stream=False).text()
    embed.embed("hi")
    fim.prompt("def f(", suffix=")").text()
    assert_cli_ok(invoke_llm("mistral", "servers", "add", "box", api.base_url, "--model", "m", "--key-name", "boxkey"))
    server = llm.get_model("box")
    server.key = GOOD
    server.prompt("hi", stream=False).text()  # a stream asks for stream_options, which is not Mistral's
    assert sent_keys(api) == {f"Bearer {GOOD}"} and len(api.requests) == 4
    chat.key = "bad key"
    with pytest.raises(MistralSuiteError, match="model.key.*a space"):
        chat.prompt("hi").text()


# --- URLs as they are printed ----------------------------------------------------------------------


@pytest.mark.parametrize("url, shown", [
    ("http://alice:s3cret@127.0.0.1:8080/v1", "http://alice:***@127.0.0.1:8080/v1"),
    ("http://u:s3cret@[::1/v1", "http://u:***@[::1/v1"),  # urlsplit raises on it: it used to be shown whole
    ("http://u:s3cret@127.0.0.1:99999/v1", "http://u:***@127.0.0.1:99999/v1"),
    ("http://a:s3cret@b@host/v1?x=1", "http://a:***@host/v1?x=1"),  # the credentials end at the last @
    ("http://alice@host/v1", "http://alice@host/v1"),
    ("http://host/v1@x:y", "http://host/v1@x:y"),  # an @ in the path is no credentials
])  # fmt: skip
def test_shown_url_masks_a_password_even_in_a_url_that_does_not_parse(url, shown):
    assert settings.shown_url(url) == shown


def test_a_password_in_an_unparsable_url_is_never_printed(monkeypatch, user_dir):
    """In LLM_MISTRAL_BASE_URL and in a hand-edited servers file: neither `servers list` nor an error shows it."""
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", "http://u:s3cret@[::1/v1")
    (user_dir / "mistral-suite-servers.json").write_text(json.dumps({"box": {"url": "http://u:s3cret@[::1/v1"}}))
    listing = assert_cli_ok(invoke_llm("mistral", "servers", "list"))
    failed = [invoke_llm("-m", model, "hi") for model in ("mistral-small", "box")]
    for result in failed:
        assert_cli_error(result, "could not be sent", "http://u:***@[::1/v1")
    assert "box: http://u:***@[::1/v1, chat" in listing
    assert "s3cret" not in listing + "".join(result.stderr for result in failed)
