"""Which GGUF files are local models: registration (cheap, never raising), `llm mistral local add/list/remove`, llm-llama-cpp's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

import llm  # noqa: E402
from conftest import assert_cli_error, assert_cli_ok, run_llm_process  # noqa: E402
from inprocess import invoke_llm  # noqa: E402
from local_kit import cli, ggufs  # noqa: E402, F401 (fixtures)
from local_kit import GREEDY, add, invoke  # noqa: E402

import llm_mistral_suite as suite  # noqa: E402
from _llm_mistral_suite.errors import MistralSuiteError  # noqa: E402
from _llm_mistral_suite.local.registry import LOCAL_REGISTRY_FILE, add_local_model, read_local_registry  # noqa: E402


# --- start-up ---------------------------------------------------------------------------------------


def test_import_and_registration_never_import_llama_cpp(ggufs, user_dir):
    (user_dir / LOCAL_REGISTRY_FILE).write_text(
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
    (user_dir / LOCAL_REGISTRY_FILE).write_text("{not json")
    (user_dir / "llama-cpp").mkdir()
    (user_dir / "llama-cpp" / "models.json").write_text('{"x": 3, "y": {"path": 7}}')
    registered = []
    suite.register_models(lambda *a, **k: registered.append(a[0].model_id))
    suite.register_embedding_models(lambda *a, **k: registered.append(a[0].model_id))
    assert not [model_id for model_id in registered if model_id.startswith("mistral-local/")]


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


def test_missing_file_after_registration(ggufs, user_dir):
    copy = user_dir / "gone.gguf"
    copy.write_bytes(ggufs.dense.read_bytes())
    add(copy, "--name", "gone")
    copy.unlink()
    assert_cli_error(invoke_llm("-m", "mistral-local/gone", "hi"), "no such file", str(copy))


# --- issue 10: remove --delete-file deletes only what is ours alone; add explains what it cannot use --------


def remove(name: str) -> str:
    return assert_cli_ok(invoke_llm("mistral", "local", "remove", name, "--delete-file"))


def test_delete_file_keeps_a_file_another_name_uses(ggufs, tmp_path):
    copy = tmp_path / "shared.gguf"
    copy.write_bytes(ggufs.dense.read_bytes())
    add(copy, "--name", "first")
    add(copy, "--name", "second")
    said = remove("first")
    assert "Removed mistral-local/first; kept" in said and "mistral-local/second still uses it" in said
    assert copy.exists()
    assert f"and deleted {copy}" in remove("second") and not copy.exists()


def test_delete_file_keeps_a_file_llm_llama_cpp_uses(ggufs, tmp_path, user_dir):
    copy = tmp_path / "theirs-too.gguf"
    copy.write_bytes(ggufs.dense.read_bytes())
    add(copy, "--name", "mine")
    (user_dir / "llama-cpp").mkdir()
    hard_link = tmp_path / "hard-link.gguf"
    os.link(copy, hard_link)  # the same file under another name
    (user_dir / "llama-cpp" / "models.json").write_text(json.dumps({"theirs": {"path": str(hard_link), "aliases": []}}))
    assert "llm-llama-cpp's theirs still uses it" in remove("mine")
    assert copy.exists()


def test_delete_file_keeps_a_file_that_is_no_longer_a_gguf(ggufs, tmp_path):
    copy = tmp_path / "reused.gguf"
    copy.write_bytes(ggufs.dense.read_bytes())
    add(copy, "--name", "reused")
    copy.write_text("my notes, written over the old model")
    assert "no longer a GGUF file" in remove("reused")
    assert copy.read_text() == "my notes, written over the old model"


def test_delete_file_never_deletes_the_target_of_a_symbolic_link(ggufs, tmp_path):
    shared = tmp_path / "shared-models"
    shared.mkdir()
    target = shared / "team.gguf"
    target.write_bytes(ggufs.dense.read_bytes())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "team.gguf").symlink_to(target)
    add(mine / "team.gguf", "--name", "team")
    assert json.loads(invoke("mistral", "local", "list", "--json").output)[0]["path"] == str(mine / "team.gguf")
    said = remove("team")
    assert "symbolic link" in said and str(target) in said
    assert target.exists() and (mine / "team.gguf").is_symlink()


def test_delete_file_still_deletes_a_file_only_it_uses(ggufs, tmp_path):
    copy = tmp_path / "alone.gguf"
    copy.write_bytes(ggufs.dense.read_bytes())
    add(copy, "--name", "alone")
    assert f"Removed mistral-local/alone and deleted {copy}" in remove("alone") and not copy.exists()
    add(ggufs.dense, "--name", "kept")
    assert_cli_ok(invoke_llm("mistral", "local", "remove", "kept"))  # without --delete-file the file stays
    assert ggufs.dense.exists()


def test_add_refuses_when_the_name_check_cannot_run(ggufs, monkeypatch):
    def failing_plugin():
        raise RuntimeError("another plugin broke")

    monkeypatch.setattr(llm, "get_models_with_aliases", failing_plugin)
    assert_cli_error(invoke_llm("mistral", "local", "add", str(ggufs.dense), "--alias", "mistral-small"),
                     "Cannot check that no other model", "RuntimeError: another plugin broke")
    assert read_local_registry() == {}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_add_refuses_a_named_pipe_instead_of_waiting_on_it(ggufs, tmp_path, llm_env):
    """Opening a FIFO to read its header waited forever for a writer."""
    pipe = tmp_path / "model.gguf"
    os.mkfifo(pipe)
    for args in ([str(pipe)], [str(ggufs.dense), "--mmproj", str(pipe)]):
        result = run_llm_process("mistral", "local", "add", *args, env=llm_env, timeout=20)
        assert_cli_error(result, f"{pipe} is not a regular file")


def test_delete_file_keeps_a_projector_another_model_uses(ggufs, tmp_path):
    """Another entry's mmproj used to count for nothing: the projector could be deleted through this one."""
    projector = tmp_path / "mmproj-shared.gguf"
    projector.write_bytes(ggufs.mmproj.read_bytes())
    add(ggufs.dense, "--name", "vis", "--mmproj", str(projector))
    add(projector, "--name", "proj")
    assert "mistral-local/vis (as its projector) still uses it" in remove("proj")
    assert projector.exists()


@pytest.mark.parametrize("alias", ["", "a/b", "x y", "../x"])
def test_an_alias_must_be_usable_as_a_name_is(ggufs, alias):
    """`--alias ''` used to be added, then skipped by every `llm` command with a warning."""
    line = assert_cli_error(invoke_llm("mistral", "local", "add", str(ggufs.dense), "--name", "tiny", "--alias", alias),
                            "is not a usable name")
    assert repr(alias) in line and read_local_registry() == {}


def test_an_alias_given_twice_is_kept_once(ggufs):
    add(ggufs.dense, "--name", "tiny", "--alias", "t", "--alias", "t")
    assert read_local_registry()["tiny"]["aliases"] == ["t"]


def test_names_are_checked_under_the_lock_so_two_adds_cannot_claim_one_alias(ggufs, user_dir, monkeypatch):
    """The check used to run before the lock was taken: an add that held the lock meanwhile went unseen."""
    from _llm_mistral_suite import storage

    read = storage._read_for_update

    def after_another_add(path, replace_damaged):  # the other `llm` wrote while this one waited for the lock
        if path.name == LOCAL_REGISTRY_FILE and not path.exists():
            path.write_text(json.dumps({"models": {"other": {"path": str(ggufs.moe), "aliases": ["shared"]}}}))
        return read(path, replace_damaged)

    monkeypatch.setattr(storage, "_read_for_update", after_another_add)
    with pytest.raises(MistralSuiteError, match="Alias 'shared' already names mistral-local/other"):
        add_local_model("mine", ggufs.dense, ["shared"])
    assert list(read_local_registry()) == ["other"]


def test_add_explains_paths_it_cannot_use(tmp_path):
    loop_a, loop_b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    assert_cli_error(invoke_llm("mistral", "local", "add", str(loop_a)), "symbolic link", "loop")
    assert_cli_error(invoke_llm("mistral", "local", "add", "~nobody-here-at-all/x.gguf"), "Cannot read")
    if os.geteuid() != 0:  # root reads anything: the kernel's own unreadable file stands in
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / "x.gguf").write_bytes(b"GGUF")
        locked.chmod(0)
        try:
            assert_cli_error(invoke_llm("mistral", "local", "add", str(locked / "x.gguf")), "Permission denied")
        finally:
            locked.chmod(0o755)
    if os.path.exists("/proc/self/mem"):
        assert_cli_error(invoke_llm("mistral", "local", "add", "/proc/self/mem"), "Cannot read /proc/self/mem")


@pytest.mark.parametrize("file_name, suggestion", [
    ("my model.gguf", "my-model"), ("modèle été.gguf", "modele-ete"), ("模型.gguf", "my-model"),
])  # fmt: skip
def test_a_file_name_that_is_no_model_name_says_to_use_name(ggufs, tmp_path, file_name, suggestion):
    copy = tmp_path / file_name
    copy.write_bytes(ggufs.dense.read_bytes())
    line = assert_cli_error(invoke_llm("mistral", "local", "add", str(copy)), "--name", f"--name {suggestion}")
    assert repr(file_name[:-5]) in line
    assert_cli_ok(invoke_llm("mistral", "local", "add", str(copy), "--name", suggestion))
