"""Local GGUF models through llama.cpp: real inference on tiny random-weight GGUF files (chat, KV cache, options, async, embeddings, errors)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from types import SimpleNamespace

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

import llm  # noqa: E402
from conftest import assert_cli_error, assert_cli_ok  # noqa: E402
from inprocess import invoke_llm  # noqa: E402
from local_kit import cli, ggufs  # noqa: E402, F401 (fixtures)
from local_kit import FAST, GREEDY, LONG_TEXT, _register, add, last_log  # noqa: E402

from _llm_mistral_suite.options import LOCAL_DEFAULT_MAX_TOKENS
from _llm_mistral_suite.local.runtime import LOADED, close_local_models, default_gpu_layers, load_local_llama


# --- inference through the CLI ----------------------------------------------------------------------


def test_prompt_stream_no_stream_deterministic_and_usage(ggufs, cli):
    assert "mistral-local/tiny" in assert_cli_ok(cli("mistral", "local", "add", str(ggufs.dense), "--name", "tiny",
                                                     "--alias", "t"))
    first = cli("-m", "t", "hello there", *GREEDY, "-o", "max_tokens", "7")
    text = assert_cli_ok(first).strip()
    assert len(text.split()) >= 4  # the factory's model emits whole words and never EOS
    assert first.stderr == ""  # llama.cpp's own logging is silenced
    again = assert_cli_ok(cli("-m", "mistral-local/tiny", "hello there", *GREEDY, "-o", "max_tokens", "7", "--no-stream"))
    assert again.strip() == text
    [log] = last_log()
    assert log["model"] == "mistral-local/tiny"
    assert log["output_tokens"] == 7 and log["input_tokens"] > 3
    assert log["response_json"]["finish_reason"] == "length"
    assert log["response_json"]["chat_template"] == "gguf" and log["response_json"]["system_prompt"] == "last-user"
    assert log["response_json"]["prompt_format"].startswith("Mistral v3 instruct format")
    # A seed makes sampling repeatable across processes, even at a high temperature.
    seeded = assert_cli_ok(cli("-m", "t", "hello", "-o", "temperature", "1.5", "-o", "seed", "7", *FAST,
                               "-o", "max_tokens", "6")).rstrip("\n")
    model = llm.get_model("t")
    assert model.prompt("hello", temperature=1.5, seed=7, n_threads=1, max_tokens=6).text() == seeded
    assert model.prompt("hello", temperature=1.5, seed=8, n_threads=1, max_tokens=6).text() != seeded


def test_moe_model_runs_and_experts_matter(ggufs):
    import llama_cpp

    loaded = load_local_llama(str(ggufs.moe), n_threads=1)
    assert loaded.llama.metadata["llama.expert_count"] == "8"
    outputs = set()
    for used in (1, 2):
        llama = llama_cpp.Llama(str(ggufs.moe), n_ctx=128, n_threads=1, verbose=False,
                                kv_overrides={"llama.expert_used_count": used})
        outputs.add(llama.create_completion("hello there", max_tokens=6, temperature=0)["choices"][0]["text"])
        llama.close()
    assert len(outputs) == 2  # routing to 1 or 2 experts changes the output: the MoE path really runs


def test_moe_through_the_cli_in_process(ggufs):
    add(ggufs.moe, "--name", "moe")
    out = assert_cli_ok(invoke_llm("-m", "mistral-local/moe", "hello there", *GREEDY, "-o", "max_tokens", "5"))
    assert len(out.split()) >= 3


def test_chat_two_turns_then_continue(ggufs, cli):
    add(ggufs.dense, "--name", "tiny")
    result = cli("chat", "-m", "mistral-local/tiny", *GREEDY, "-o", "max_tokens", "6",
                 input=f"{LONG_TEXT}\nwhat about the cat\nquit\n")
    assert_cli_ok(result)
    turns = last_log(2)
    assert turns[0]["conversation_id"] == turns[1]["conversation_id"]
    first, second = turns
    assert second["input_tokens"] > first["input_tokens"] + first["output_tokens"]  # the whole conversation
    # Same process, same Llama: turn 2 re-reads only what is new (KV cache prefix reuse).
    cached = json.loads(second["token_details"])["cached_tokens"]
    assert cached >= first["input_tokens"]
    cont = assert_cli_ok(cli("-c", "and the dog", *GREEDY, "-o", "max_tokens", "4"))
    assert cont.strip()
    [third] = last_log()
    assert third["conversation_id"] == first["conversation_id"]
    assert third["input_tokens"] > second["input_tokens"] + second["output_tokens"]
    assert third["output_tokens"] == 4


def test_schema_constrains_output_to_json(ggufs, cli):
    add(ggufs.dense, "--name", "tiny")
    out = assert_cli_ok(cli("-m", "mistral-local/tiny", "--schema", "ok bool", "answer", *GREEDY,
                            "-o", "max_tokens", "60"))
    data = json.loads(out)
    assert isinstance(data, dict) and isinstance(data.get("ok"), bool)


def test_options_validation(ggufs):
    add(ggufs.dense, "--name", "tiny")
    result = invoke_llm("-m", "mistral-local/tiny", "hi", "-o", "max_tokens", "0")
    assert result.returncode != 0 and "max_tokens" in result.stderr and "Traceback" not in result.stderr
    result = invoke_llm("-m", "mistral-local/tiny", "hi", "-o", "top_p", "2")
    assert result.returncode != 0 and "top_p" in result.stderr
    options = {name for name in llm.get_model("mistral-local/tiny").Options.model_fields}
    assert {"max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n_ctx", "n_gpu_layers",
            "n_threads", "verbose"} <= options


def test_gpu_layers_default():
    assert default_gpu_layers(SimpleNamespace(llama_supports_gpu_offload=lambda: True)) == -1
    assert default_gpu_layers(SimpleNamespace(llama_supports_gpu_offload=lambda: False)) == 0


def test_kv_cache_reuse_across_turns(ggufs, user_dir):
    _register(user_dir, "kv", ggufs.dense)
    model = llm.get_model("mistral-local/kv")
    conversation = model.conversation()
    first = conversation.prompt(LONG_TEXT, max_tokens=8, temperature=0, n_threads=1)
    first.text()
    loaded = LOADED[(str(ggufs.dense), False)]
    llama = loaded.llama
    evaluated: list[int] = []
    metered_eval = llama.eval

    def counting_eval(tokens):
        evaluated.append(len(tokens))
        return metered_eval(tokens)

    llama.eval = counting_eval
    try:
        second = conversation.prompt("what about the cat", max_tokens=8, temperature=0, n_threads=1)
        second.text()
    finally:
        llama.eval = metered_eval
    assert LOADED[(str(ggufs.dense), False)] is loaded  # the same Llama, not reloaded
    usage = second.usage()
    assert usage.input > first.usage().input + 8
    assert evaluated[0] < usage.input * 0.2  # only the new tokens are read, not the whole conversation
    assert usage.details["cached_tokens"] == usage.input - evaluated[0]
    assert sum(evaluated) <= evaluated[0] + 8


def test_stop_option_and_default_max_tokens(ggufs, user_dir):
    _register(user_dir, "opts", ggufs.dense)
    model = llm.get_model("mistral-local/opts")
    full = model.prompt("hello there", max_tokens=8, temperature=0, n_threads=1).text()
    words = full.split()
    stopped = model.prompt("hello there", max_tokens=8, temperature=0, n_threads=1, stop=json.dumps([" " + words[3]]))
    assert stopped.text() == " ".join(words[:3])  # the reply starts without SentencePiece's "▁"
    assert stopped.response_json["finish_reason"] == "stop"
    loaded = LOADED[(str(ggufs.dense), False)]
    seen = {}
    original = loaded.llama.generate

    def spy(tokens, **kwargs):
        seen.update(kwargs)
        return original(tokens, **kwargs)

    loaded.llama.generate = spy
    try:
        default = model.prompt("hi", n_threads=1)
        default.text()
    finally:
        loaded.llama.generate = original
    assert default.usage().output == LOCAL_DEFAULT_MAX_TOKENS  # never "until the context is full"
    assert default.response_json["finish_reason"] == "length"
    # unset options keep llama-cpp-python's chat defaults
    assert (seen["temp"], seen["top_p"], seen["top_k"], seen["min_p"]) == (0.2, 0.95, 40, 0.05)


def test_async_model(ggufs, user_dir):
    _register(user_dir, "asy", ggufs.dense)
    sync_text = llm.get_model("mistral-local/asy").prompt("hello there", max_tokens=5, temperature=0, n_threads=1).text()

    async def run():
        model = llm.get_async_model("mistral-local/asy")
        return await model.prompt("hello there", max_tokens=5, temperature=0, n_threads=1).text()

    assert asyncio.run(run()) == sync_text


# --- embeddings ---------------------------------------------------------------------------------------


def test_embeddings_one_vector_per_input(ggufs, cli, user_dir):
    add(ggufs.dense, "--name", "emb", "--embedding")
    vector = json.loads(assert_cli_ok(cli("embed", "-m", "mistral-local/emb", "-c", "hello there")))
    assert len(vector) == 64 and all(isinstance(x, float) for x in vector)
    docs = user_dir / "docs"
    docs.mkdir()
    for name, text in {"a": "hello there", "b": "the cat sat", "c": "blue sky " * 30}.items():
        (docs / f"{name}.txt").write_text(text)
    assert_cli_ok(invoke_llm("embed-multi", "notes", "-m", "mistral-local/emb", "--files", str(docs), "*.txt"))
    with sqlite3.connect(user_dir / "embeddings.db") as db:
        blobs = dict(db.execute("select id, embedding from embeddings").fetchall())
    assert sorted(blobs) == ["a.txt", "b.txt", "c.txt"]
    assert {len(blob) for blob in blobs.values()} == {64 * 4}
    assert len(set(blobs.values())) == 3
    # The model is not a chat model.
    assert "mistral-local/emb" not in {model.model_id for model in llm.get_models()}  # not a chat model


def test_corrupt_gguf_is_llama_cpp_load_error(cli, user_dir):
    import gguf

    path = user_dir / "broken.gguf"  # a valid GGUF container that is not a loadable model
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(128)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    add(path, "--name", "broken")
    line = assert_cli_error(cli("-m", "mistral-local/broken", "hi", *FAST), "could not load", "embedding_length")
    assert str(path) in line


def test_prompt_longer_than_context(ggufs, cli):
    add(ggufs.dense, "--name", "tiny")
    line = assert_cli_error(cli("-m", "mistral-local/tiny", LONG_TEXT * 2, "-o", "n_ctx", "256", *FAST),
                            "context window of 256 tokens", "n_ctx")
    assert re.search(r"The prompt is \d+ tokens", line)
    # Asking for less than llama.cpp's 256-token granularity used to overflow llama-cpp-python's buffer.
    assert_cli_error(invoke_llm("-m", "mistral-local/tiny", LONG_TEXT * 2, "-o", "n_ctx", "64", *FAST),
                     "context window of 256 tokens")


@pytest.mark.parametrize("continued", [False, True])
def test_an_empty_prompt_is_refused_before_the_model_loads(ggufs, cli, continued):
    """Random weights would answer an empty turn with invented text; llama.cpp would first spend the load."""
    add(ggufs.dense, "--name", "tiny")
    if continued:
        assert_cli_ok(cli("-m", "mistral-local/tiny", "hi", *FAST, "-o", "max_tokens", "2"))
    args = ("-c", "  ") if continued else ("-m", "mistral-local/tiny", "")
    close_local_models()  # what earlier tests in this process loaded
    assert_cli_error(invoke_llm(*args, *FAST), "The prompt is empty")
    assert not LOADED  # refused before loading: this process never loaded the model
    assert len(last_log(5)) == (1 if continued else 0)


def test_llama_cpp_missing_names_the_extra(ggufs, cli, tmp_path):
    shim = tmp_path / "shim" / "llama_cpp"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'llama_cpp'\")\n")
    add(ggufs.dense, "--name", "tiny")
    env = {"PYTHONPATH": str(tmp_path / "shim"), "LLM_LOAD_PLUGINS": "llm-mistral-suite"}
    assert_cli_error(cli("-m", "mistral-local/tiny", "hi", **env), "llm-mistral-suite[local]", "not installed")
    assert "mistral-local/tiny" in assert_cli_ok(invoke_llm("mistral", "local", "list"))  # no llama_cpp needed
