"""Local GGUF models through llama.cpp (issue 4): real inference on tiny random-weight GGUF files.

Every inference here runs real llama.cpp (llama-cpp-python) on models that gguf_factory writes in a
few milliseconds. CLI behaviour is checked through the installed `llm` as a subprocess; the KV cache,
rendering and download internals in-process. The module is skipped without llama-cpp-python.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import re
import socketserver
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

import llm  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from conftest import assert_cli_error, assert_cli_ok, run_llm_process  # noqa: E402
from gguf_factory import DEFAULT_WORDS, MISTRAL_V1_HF_TEMPLATE, MISTRAL_V3_TEMPLATE, write_tiny_gguf  # noqa: E402
from inprocess import invoke_llm  # noqa: E402

import llm_mistral_suite as suite  # noqa: E402

FAST = ("-o", "n_threads", "1")  # steadier than 2 threads on busy 2-core machines
GREEDY = ("-o", "temperature", "0", "-o", "seed", "1", *FAST)
LONG_TEXT = " ".join(DEFAULT_WORDS[i % 120] for i in range(150))  # ~150 words, all in the vocabulary


@pytest.fixture(scope="session")
def ggufs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return SimpleNamespace(
        dense=write_tiny_gguf(folder / "tiny-dense.gguf"),
        moe=write_tiny_gguf(folder / "tiny-moe.gguf", moe=True, seed=1),
        v1=write_tiny_gguf(folder / "tiny-v1.gguf", chat_template=MISTRAL_V1_HF_TEMPLATE, seed=2),
        bare=write_tiny_gguf(folder / "tiny-bare.gguf", chat_template=None, seed=3),
        folder=folder,
    )


@pytest.fixture
def cli(llm_env):
    """``cli(*args, input=None, **env)``: the installed `llm` in a subprocess, this test's user dir."""

    def run(*args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess:
        return run_llm_process(*args, input=input, env={**llm_env, **env})

    return run


def invoke(*args: str):
    """`llm ARGS` in-process (registry commands: no model runs)."""
    from llm.cli import cli as llm_cli

    return CliRunner().invoke(llm_cli, list(args), catch_exceptions=False)


def last_log(count: int = 1) -> list[dict]:
    """The last ``count`` logged responses, oldest first (read in-process: a subprocess costs a second)."""
    return json.loads(assert_cli_ok(invoke_llm("logs", "--json", "-n", str(count))))


def add(path: Path, *args: str) -> None:
    assert_cli_ok(invoke_llm("mistral", "local", "add", str(path), *args))


# --- start-up ---------------------------------------------------------------------------------------


def test_import_and_registration_never_import_llama_cpp(ggufs, user_dir):
    (user_dir / suite.LOCAL_REGISTRY_FILE).write_text(
        json.dumps({"models": {"tiny": {"path": str(ggufs.dense), "aliases": ["t"]},
                               "emb": {"path": str(ggufs.dense), "aliases": [], "embedding": True}}})
    )
    code = (
        "import sys, llm_mistral_suite as s; got = []; "
        "s.register_models(lambda *a, **k: got.append(a[0].model_id)); "
        "s.register_embedding_models(lambda *a, **k: got.append(a[0].model_id)); "
        "assert 'mistral-local/tiny' in got and 'mistral-local/emb' in got, got; "
        "assert 'llama_cpp' not in sys.modules and 'gguf' not in sys.modules, 'heavy import'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert result.stdout.strip() == "ok", result.stderr


def test_registration_survives_a_broken_registry(user_dir):
    (user_dir / suite.LOCAL_REGISTRY_FILE).write_text("{not json")
    (user_dir / "llama-cpp").mkdir()
    (user_dir / "llama-cpp" / "models.json").write_text('{"x": 3, "y": {"path": 7}}')
    registered = []
    suite.register_local_models(lambda *a, **k: registered.append(a))
    suite.register_local_embedding_models(lambda *a, **k: registered.append(a))
    assert registered == []


# --- registry commands --------------------------------------------------------------------------------


def test_add_list_remove(ggufs, user_dir):
    result = invoke("mistral", "local", "add", str(ggufs.dense), "--name", "tiny", "--alias", "t")
    assert result.exit_code == 0, result.output
    assert "mistral-local/tiny" in result.output
    assert invoke("mistral", "local", "add", str(ggufs.moe)).exit_code == 0  # name from the stem
    listing = invoke("mistral", "local", "list").output
    assert "mistral-local/tiny (aliases: t)" in listing
    assert "mistral-local/tiny-moe" in listing and "MoE 8 experts (2 per token)" in listing
    assert "architecture llama" in listing and "context 2048" in listing
    rows = {row["name"]: row for row in json.loads(invoke("mistral", "local", "list", "--json").output)}
    assert rows["tiny"]["experts"] is None and rows["tiny-moe"]["experts"] == 8
    assert rows["tiny"]["size"] == ggufs.dense.stat().st_size
    assert rows["tiny"]["path"] == str(ggufs.dense.resolve())

    models = {model.model_id: model for model in llm.get_models()}
    assert "mistral-local/tiny" in models and llm.get_model("t").model_id == "mistral-local/tiny"

    taken = invoke("mistral", "local", "add", str(ggufs.moe), "--name", "other", "--alias", "t")
    assert taken.exit_code != 0 and "already names mistral-local/tiny" in taken.output
    clash = invoke("mistral", "local", "add", str(ggufs.v1), "--name", "tiny")
    assert clash.exit_code != 0 and "already registered" in clash.output

    assert "Removed mistral-local/tiny" in invoke("mistral", "local", "remove", "tiny").output
    assert "mistral-local/tiny " not in invoke("mistral", "local", "list").output
    missing = invoke("mistral", "local", "remove", "tiny")
    assert missing.exit_code != 0 and "No local model named 'tiny'" in missing.output
    assert ggufs.dense.exists()


def test_gguf_header_reader_matches_gguf_package(ggufs):
    import gguf

    for path in (ggufs.dense, ggufs.moe):
        info = suite.read_gguf_info(path)
        reader = gguf.GGUFReader(path)
        fields = {name: field.contents() for name, field in reader.fields.items()}
        assert info.architecture == fields["general.architecture"] == "llama"
        assert info.context_length == fields["llama.context_length"]
        assert info.embedding_length == fields["llama.embedding_length"]
        assert info.tensor_count == len(reader.tensors)
        assert info.metadata["tokenizer.chat_template"] == MISTRAL_V3_TEMPLATE
        assert info.metadata["tokenizer.ggml.tokens"] == {"array_length": len(fields["tokenizer.ggml.tokens"])}
        assert info.data_offset == reader.data_offset
        assert info.data_end == max(t.data_offset + t.n_bytes for t in reader.tensors)
    assert suite.read_gguf_info(ggufs.moe).expert_count == 8


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
    assert log["response_json"]["chat_template"] == "gguf" and log["response_json"]["system_prompt"] == "native"
    # A seed makes sampling repeatable across processes, even at a high temperature.
    seeded = assert_cli_ok(cli("-m", "t", "hello", "-o", "temperature", "1.5", "-o", "seed", "7", *FAST,
                               "-o", "max_tokens", "6")).rstrip("\n")
    model = llm.get_model("t")
    assert model.prompt("hello", temperature=1.5, seed=7, n_threads=1, max_tokens=6).text() == seeded
    assert model.prompt("hello", temperature=1.5, seed=8, n_threads=1, max_tokens=6).text() != seeded


def test_moe_model_runs_and_experts_matter(ggufs):
    import llama_cpp

    loaded = suite.load_local_llama(str(ggufs.moe), n_threads=1)
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
    v3 = suite.LocalChatFormatter(MISTRAL_V3_TEMPLATE)
    assert v3.system_placement == "native" and v3.strip_assistant
    assert v3.render(conversation) == "<s>[INST] one[/INST] reply</s>[INST] SYS\n\ntwo[/INST]"

    v1 = suite.LocalChatFormatter(MISTRAL_V1_HF_TEMPLATE)
    assert v1.system_placement == "first-user" and not v1.strip_assistant
    assert v1.render(conversation) == "<s>[INST] SYS\n\none [/INST] reply</s> [INST] two [/INST]"

    # No template in the GGUF: Mistral's [INST] format; v3 placement when [INST] is a control token.
    bare = suite.LocalChatFormatter(None, inst_is_control=True)
    assert bare.template_source == "default" and bare.system_placement == "last-user"
    assert bare.render(conversation) == "<s>[INST] one[/INST] reply</s>[INST] SYS\n\ntwo[/INST]"
    bare_v1 = suite.LocalChatFormatter(None, inst_is_control=False)
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
    assert suite.default_gpu_layers(SimpleNamespace(llama_supports_gpu_offload=lambda: True)) == -1
    assert suite.default_gpu_layers(SimpleNamespace(llama_supports_gpu_offload=lambda: False)) == 0


# --- in-process: KV cache reuse, options, async -------------------------------------------------------


def _register(user_dir: Path, name: str, path: Path, **extra) -> None:
    models = suite.read_local_registry()
    models[name] = {"path": str(path), "aliases": [], **extra}
    suite.write_local_registry(models)


def test_kv_cache_reuse_across_turns(ggufs, user_dir):
    _register(user_dir, "kv", ggufs.dense)
    model = llm.get_model("mistral-local/kv")
    conversation = model.conversation()
    first = conversation.prompt(LONG_TEXT, max_tokens=8, temperature=0, n_threads=1)
    first.text()
    loaded = suite._LOCAL_LOADED[(str(ggufs.dense), False)]
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
    assert suite._LOCAL_LOADED[(str(ggufs.dense), False)] is loaded  # the same Llama, not reloaded
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
    assert stopped.text() == " " + " ".join(words[:3])
    assert stopped.response_json["finish_reason"] == "stop"
    loaded = suite._LOCAL_LOADED[(str(ggufs.dense), False)]
    seen = {}

    def spy(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    original = loaded.llama.create_chat_completion
    loaded.llama.create_chat_completion = spy
    try:
        with pytest.raises(suite.MistralSuiteError, match="stop here"):
            model.prompt("hi", n_threads=1).text()
    finally:
        loaded.llama.create_chat_completion = original
    assert seen["max_tokens"] == suite.LOCAL_DEFAULT_MAX_TOKENS  # never "until the context is full"
    assert "temperature" not in seen  # unset options keep llama-cpp-python's defaults


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


# --- llm-llama-cpp interop ----------------------------------------------------------------------------


def test_llm_llama_cpp_models_json_interop(ggufs, cli, user_dir):
    folder = user_dir / "llama-cpp"
    folder.mkdir()
    # The shape `llm llama-cpp add-model PATH -a tinyllama` writes (llm-llama-cpp 0.3).
    (folder / "models.json").write_text(json.dumps(
        {"tiny-dense": {"path": str(ggufs.dense), "aliases": ["tinyllama"]},
         "old-ggml": {"path": str(ggufs.folder / "x.bin"), "aliases": []}}, indent=2))
    models = assert_cli_ok(invoke_llm("models"))
    assert "mistral-local/tiny-dense" in models
    assert "mistral-local/old-ggml" not in models
    ours = [line for line in models.splitlines() if "mistral-local/tiny-dense" in line]
    assert ours and "tinyllama" not in ours[0]  # llm-llama-cpp's aliases stay llm-llama-cpp's
    aliases = assert_cli_ok(invoke_llm("aliases", "--json"))
    if "tinyllama" in aliases:  # llm-llama-cpp is installed (the [local] extra brings it)
        assert json.loads(aliases)["tinyllama"] == "tiny-dense"
    out = assert_cli_ok(cli("-m", "mistral-local/tiny-dense", "-s", "Be brief", "hello there", *GREEDY,
                            "-o", "max_tokens", "4"))
    assert len(out.split()) >= 2
    listing = assert_cli_ok(invoke_llm("mistral", "local", "list"))
    assert "mistral-local/tiny-dense [from llm-llama-cpp]" in listing
    assert_cli_error(invoke_llm("mistral", "local", "remove", "tiny-dense"), "models.json")
    # An alias of llm-llama-cpp's model cannot be taken by ours.
    if "tinyllama" in aliases:
        assert_cli_error(invoke_llm("mistral", "local", "add", str(ggufs.moe), "--alias", "tinyllama"),
                         "already names")


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_files_are_one_clear_error(ggufs, user_dir):
    def add_fails(path, *needles):
        assert_cli_error(invoke_llm("mistral", "local", "add", str(path)), *needles)

    add_fails(user_dir / "nope.gguf", "no such file")
    text = user_dir / "notes.txt"
    text.write_text("hello")
    add_fails(text, "not a GGUF file")
    add_fails(user_dir, "directory")
    truncated = user_dir / "truncated.gguf"
    truncated.write_bytes(ggufs.dense.read_bytes()[:300_000])
    add_fails(truncated, "truncated", "interrupted download")
    header_only = user_dir / "header.gguf"
    header_only.write_bytes(ggufs.dense.read_bytes()[:40])
    add_fails(header_only, "corrupt")
    (user_dir / "empty.gguf").write_bytes(b"")
    add_fails(user_dir / "empty.gguf", "not a GGUF file")
    assert "mistral-local" not in assert_cli_ok(invoke_llm("models"))


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


def test_missing_file_after_registration(ggufs, user_dir):
    copy = user_dir / "gone.gguf"
    copy.write_bytes(ggufs.dense.read_bytes())
    add(copy, "--name", "gone")
    copy.unlink()
    assert_cli_error(invoke_llm("-m", "mistral-local/gone", "hi"), "no such file", str(copy))


def test_prompt_longer_than_context(ggufs, cli):
    add(ggufs.dense, "--name", "tiny")
    line = assert_cli_error(cli("-m", "mistral-local/tiny", LONG_TEXT * 2, "-o", "n_ctx", "256", *FAST),
                            "context window of 256 tokens", "n_ctx")
    assert re.search(r"The prompt is \d+ tokens", line)
    # Asking for less than llama.cpp's 256-token granularity used to overflow llama-cpp-python's buffer.
    assert_cli_error(invoke_llm("-m", "mistral-local/tiny", LONG_TEXT * 2, "-o", "n_ctx", "64", *FAST),
                     "context window of 256 tokens")


def test_llama_cpp_missing_names_the_extra(ggufs, cli, tmp_path):
    shim = tmp_path / "shim" / "llama_cpp"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'llama_cpp'\")\n")
    add(ggufs.dense, "--name", "tiny")
    env = {"PYTHONPATH": str(tmp_path / "shim"), "LLM_LOAD_PLUGINS": "llm-mistral-suite"}
    assert_cli_error(cli("-m", "mistral-local/tiny", "hi", **env), "llm-mistral-suite[local]", "not installed")
    assert "mistral-local/tiny" in assert_cli_ok(invoke_llm("mistral", "local", "list"))  # no llama_cpp needed


# --- download -----------------------------------------------------------------------------------------


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """Hugging Face's shape: /<repo>/resolve/main/<file> redirects (with X-Linked-Etag) to a CDN URL
    that serves the bytes and honours Range."""

    hub: "FakeHub"

    def log_message(self, *args):
        pass

    def do_GET(self):
        hub = self.hub
        hub.requests.append((self.path, self.headers.get("Range")))
        if "/resolve/main/" in self.path:
            name = self.path.rsplit("/", 1)[1]
            if name not in hub.files:
                self.send_response(404)
                self.send_header("Content-Length", "15")
                self.end_headers()
                self.wfile.write(b"Entry not found")
                return
            self.send_response(302)
            self.send_header("Location", f"/cdn/{name}")
            self.send_header("X-Linked-Etag", f'"{hub.etag or hashlib.sha256(hub.files[name]).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.hub.files[self.path.rsplit("/", 1)[1]]
        start = 0
        found = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if found:
            start = int(found.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if hub.cut_after is not None:
            self.wfile.write(body[: hub.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(body)


class FakeHub:
    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        self.etag: str | None = None
        self.cut_after: int | None = None
        handler = type("Handler", (_HubHandler,), {"hub": self})
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


MISTRAL_7B_FILE = "Mistral-7B-Instruct-v0.3-Q4_K_M.gguf"


def download(hub: "FakeHub", *args: str) -> subprocess.CompletedProcess:
    return invoke_llm("mistral", "local", "download", *args, env={"LLM_MISTRAL_HF_BASE_URL": hub.url})


@pytest.fixture
def hub(ggufs):
    server = FakeHub({MISTRAL_7B_FILE: ggufs.dense.read_bytes()})
    yield server
    server.close()


def test_download_registers_with_aliases(hub, cli, user_dir, ggufs):
    result = cli("mistral", "local", "download", "mistral-7b", LLM_MISTRAL_HF_BASE_URL=hub.url)
    assert_cli_ok(result)
    assert hub.requests[0] == (f"/bartowski/Mistral-7B-Instruct-v0.3-GGUF/resolve/main/{MISTRAL_7B_FILE}", None)
    dest = user_dir / "mistral-local" / MISTRAL_7B_FILE
    assert dest.read_bytes() == ggufs.dense.read_bytes()
    assert not dest.with_name(dest.name + ".part").exists()
    assert "mistral-7b-local" in assert_cli_ok(invoke_llm("mistral", "local", "list"))
    out = assert_cli_ok(cli("-m", "mistral-7b-local", "hello", *GREEDY, "-o", "max_tokens", "3"))
    assert out.strip()
    catalog = assert_cli_ok(invoke_llm("mistral", "local", "download"))
    assert "mixtral-8x7b" in catalog and "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF" in catalog


def test_download_resumes_a_partial_file(hub, user_dir, ggufs):
    data = ggufs.dense.read_bytes()
    part = user_dir / "mistral-local" / (MISTRAL_7B_FILE + ".part")
    part.parent.mkdir()
    part.write_bytes(data[:400_000])
    assert_cli_ok(download(hub, "mistral-7b"))
    assert [r for _, r in hub.requests] == ["bytes=400000-", "bytes=400000-"]  # redirect, then the CDN
    assert (user_dir / "mistral-local" / MISTRAL_7B_FILE).read_bytes() == data


def test_interrupted_download_never_registers_then_resumes(hub, user_dir, ggufs):
    hub.cut_after = 300_000
    failed = download(hub, "mistral-7b")
    assert_cli_error(failed, "run the same command again to resume")
    part = user_dir / "mistral-local" / (MISTRAL_7B_FILE + ".part")
    assert part.exists() and 0 < part.stat().st_size < len(ggufs.dense.read_bytes())
    assert not (user_dir / "mistral-local" / MISTRAL_7B_FILE).exists()
    assert suite.read_local_registry() == {}
    have = part.stat().st_size
    hub.cut_after = None
    hub.requests.clear()
    assert_cli_ok(download(hub, "mistral-7b"))
    assert hub.requests[-1][1] == f"bytes={have}-"
    assert (user_dir / "mistral-local" / MISTRAL_7B_FILE).read_bytes() == ggufs.dense.read_bytes()
    assert "mistral-7b" in suite.read_local_registry()


def test_bad_checksum_deletes_and_never_registers(hub, user_dir):
    hub.etag = "0" * 64
    line = assert_cli_error(download(hub, "mistral-7b"),
                            "checksum", "0" * 64)
    assert "sha256" in line
    assert list((user_dir / "mistral-local").iterdir()) == []
    assert suite.read_local_registry() == {}
    assert "mistral-local" not in assert_cli_ok(invoke_llm("models"))


def test_download_errors(hub):
    assert_cli_error(download(hub, "mistral-99b"), "unknown model", "mixtral-8x7b")
    hub.files[MISTRAL_7B_FILE] = b"<html>Service unavailable</html>"  # served whole, with a matching etag
    assert_cli_error(download(hub, "mistral-7b"), "not a usable model", "not a GGUF file")
    assert suite.read_local_registry() == {}
    assert not any(suite.local_models_dir().iterdir())
    hub.files.clear()
    assert_cli_error(download(hub, "mistral-7b"), "404")


def test_every_retired_models_local_route_is_downloadable():
    routes = {entry.local_route for entry in suite.BUILTIN_CATALOG if entry.local_route}
    assert routes and routes <= set(suite.LOCAL_DOWNLOADS)
    for entry in suite.LOCAL_DOWNLOADS.values():
        assert all(name.endswith(".gguf") for name in entry["files"]) and entry["aliases"]


def test_download_file_checks_a_pinned_sha256(hub, user_dir, ggufs):
    url = f"{hub.url}/r/resolve/main/{MISTRAL_7B_FILE}"
    data = ggufs.dense.read_bytes()
    dest = user_dir / "pinned.gguf"
    with pytest.raises(suite.MistralSuiteError, match="checksum"):
        suite.download_file(url, dest, sha256="f" * 64)  # a pinned sum wins over the header
    assert not dest.exists()
    with pytest.raises(suite.MistralSuiteError, match="incomplete"):
        suite.download_file(url, dest, size=len(data) + 1)
    suite.download_file(url, dest, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert dest.read_bytes() == data
