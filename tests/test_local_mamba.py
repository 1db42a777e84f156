"""Codestral Mamba's architecture (Mamba-2) locally: chat, `llm -c`, `llm chat` reading only the new tokens each turn,
the same answers kept loaded as in a fresh process, and FIM, on a tiny random-weight Mamba-2 GGUF."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

import llm  # noqa: E402
from conftest import assert_cli_ok  # noqa: E402
from inprocess import invoke_llm  # noqa: E402
from local_kit import cli, ggufs  # noqa: E402, F401 (fixtures)
from local_kit import GREEDY, add, last_log  # noqa: E402

from _llm_mistral_suite.local.runtime import LOADED  # noqa: E402

TURNS = ["hello there", "what about the cat", "and the dog"]


def cached(log: dict) -> int:
    return json.loads(log["token_details"] or "{}").get("cached_tokens", 0)


def test_listed_with_its_architecture(ggufs):
    add(ggufs.mamba, "--name", "mamba")
    listing = assert_cli_ok(invoke_llm("mistral", "local", "list"))
    assert "architecture mamba2" in listing
    [row] = json.loads(assert_cli_ok(invoke_llm("mistral", "local", "list", "--json")))
    assert row["architecture"] == "mamba2" and row["recurrent"] is True


def test_prompt_and_continue(ggufs, cli):
    add(ggufs.mamba, "--name", "mamba", "--alias", "cm")
    first = assert_cli_ok(cli("-m", "cm", "hello there", *GREEDY, "-o", "max_tokens", "6"))
    assert len(first.split()) >= 4
    again = assert_cli_ok(cli("-c", "what about the cat", *GREEDY, "-o", "max_tokens", "5"))
    assert again.strip()
    one, two = last_log(2)
    assert two["conversation_id"] == one["conversation_id"]
    assert two["input_tokens"] > one["input_tokens"] + one["output_tokens"]
    assert cached(two) == 0  # a new process: the whole conversation is read again


def test_llm_chat_reads_only_the_new_tokens_and_answers_as_a_fresh_process(ggufs, cli):
    """Kept loaded (`llm chat`), turn N extends what llama.cpp evaluated (the reply's own sampled tokens, then
    </s>): only the new tokens are read. A fresh process given the same conversation (`llm -c`) reads it all
    and gives the same answer at temperature 0."""
    add(ggufs.mamba, "--name", "mamba")
    options = (*GREEDY, "-o", "max_tokens", "6")
    assert_cli_ok(cli("chat", "-m", "mistral-local/mamba", *options, input="\n".join(TURNS) + "\nquit\n"))
    kept = last_log(3)
    assert len({log["conversation_id"] for log in kept}) == 1
    for previous, turn in zip(kept, kept[1:]):
        # all of the previous prompt and reply came from the recurrent state but the reply's last token,
        # which was sampled, never evaluated
        assert cached(turn) == previous["input_tokens"] + previous["output_tokens"] - 1
        assert turn["input_tokens"] - cached(turn) < 12
    # the same conversation: two turns in one process, the third in a fresh one
    assert_cli_ok(cli("chat", "-m", "mistral-local/mamba", *options, input="\n".join(TURNS[:2]) + "\nquit\n"))
    fresh = assert_cli_ok(cli("-c", TURNS[2], *options))
    [third] = last_log()
    assert cached(third) == 0 and third["input_tokens"] == kept[2]["input_tokens"]
    assert fresh.strip() == kept[2]["response"].strip()


def test_a_diverging_prompt_is_read_again_with_the_same_answer(ggufs, user_dir):
    """A v3 system prompt goes before the last user message, so each turn's prompt diverges early: llama.cpp
    cannot cut a recurrent state back, so the whole prompt is read again (no cached tokens), same answer."""
    from local_kit import _register

    _register(user_dir, "mamba", ggufs.mamba)
    model = llm.get_model("mistral-local/mamba")
    options = {"max_tokens": 5, "temperature": 0, "seed": 1, "n_threads": 1}
    conversation = model.conversation()
    conversation.prompt("hello there", system="be brief", **options).text()
    second = conversation.prompt("what about the cat", system="be brief", **options)
    kept_answer = second.text()
    assert not (second.usage().details or {}).get("cached_tokens")
    import llama_cpp

    assert llama_cpp.llama_model_is_recurrent(LOADED[(str(ggufs.mamba), False)].llama.model)
    LOADED.clear()  # a fresh model, as in a new process
    replay = model.conversation()
    replay.responses = list(conversation.responses[:1])
    fresh = replay.prompt("what about the cat", system="be brief", **options)
    assert fresh.text() == kept_answer


def test_fill_in_the_middle(ggufs):
    add(ggufs.mamba, "--name", "mamba")
    middle = assert_cli_ok(invoke_llm("mistral", "fim", "-m", "mistral-local/mamba", "def f(", "--suffix", "return 1",
                                      "-o", "max_tokens", "5", "-o", "temperature", "0", "-o", "n_threads", "1"))
    assert middle.strip() and not middle.endswith("\n")
