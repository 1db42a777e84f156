"""Our files in llm's user directory under races and damage (issue 10, items 4 and 5): one locked read-modify-write
with a temporary file per write, so concurrent `llm` commands lose nothing; and a damaged file (bad fields, not
JSON, a directory) is skipped entry by entry with one warning naming it, never breaking `llm` itself."""

from __future__ import annotations

import concurrent.futures
import json
import struct
import threading
import time
from pathlib import Path

import llm
import pytest

from conftest import ONLY_THIS_PLUGIN, assert_cli_error, assert_cli_ok, run_llm_process
from inprocess import invoke_llm

import llm_mistral_suite as suite
from _llm_mistral_suite import storage
from _llm_mistral_suite.catalog import catalog_cache_path
from _llm_mistral_suite.errors import MistralSuiteError
from _llm_mistral_suite.local.registry import llama_cpp_models_path, local_registry_path
from _llm_mistral_suite.servers import servers_path

WRITERS = 8
RACE_TIMEOUT = 120  # seconds for every writer of a race together: a lock that never frees fails, not hangs


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees the warnings of its own `llm` runs (they are said once per process)."""
    monkeypatch.setattr(storage, "_warned", set(), raising=False)


def tiny_gguf(path: Path) -> Path:
    """The smallest file our GGUF reader accepts: the header of a GGUF v3 with no tensors and no metadata."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    return path


@pytest.fixture
def without_llm_llama_cpp():
    """In-process `llm` runs without llm-llama-cpp (a test dependency here), which itself breaks on a damaged
    models.json of its own: what our plugin does with that file is under test, not what that plugin does."""
    from llm.plugins import load_plugins, pm

    load_plugins()
    plugin = pm.get_plugin("llama_cpp")  # the entry point's name
    if plugin is not None:
        pm.unregister(plugin)
    yield
    if plugin is not None:
        pm.register(plugin, "llama_cpp")


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "files"
    path.mkdir()
    return path


def warnings_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Warning: ")]


# --- the locked update -------------------------------------------------------------------------------


def test_update_reads_changes_and_writes_under_the_lock(folder):
    path = folder / "file.json"
    assert storage.update_json_object(path, lambda data: data.setdefault("a", 1)) == 1
    assert storage.update_json_object(path, lambda data: data.update(b=2)) is None
    assert json.loads(path.read_text()) == {"a": 1, "b": 2}
    assert sorted(p.name for p in folder.iterdir()) == ["file.json", "file.json.lock"]  # no temporary left


def test_a_change_that_raises_leaves_the_file_as_it_was(folder):
    path = folder / "file.json"
    path.write_text('{"keep": true}')

    def fail(data: dict) -> None:
        data.clear()
        raise MistralSuiteError("no")

    with pytest.raises(MistralSuiteError):
        storage.update_json_object(path, fail)
    assert json.loads(path.read_text()) == {"keep": True}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", None])  # None: a directory
def test_a_damaged_file_is_an_error_to_change_unless_it_may_be_replaced(folder, content):
    path = folder / "file.json"
    path.mkdir() if content is None else path.write_text(content)
    with pytest.raises(MistralSuiteError, match="fix or delete it"):
        storage.update_json_object(path, lambda data: data.update(x=1))
    if content is not None:
        storage.update_json_object(path, lambda data: data.update(x=1), replace_damaged=True)
        assert json.loads(path.read_text()) == {"x": 1}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", None])  # None: a directory
def test_an_update_is_checked_before_work_that_cannot_be_undone(folder, content):
    path = folder / "file.json"
    storage.check_updatable(path)  # missing: fine, it will be created
    path.write_text('{"a": 1}')
    storage.check_updatable(path)
    path.unlink()
    path.mkdir() if content is None else path.write_text(content)
    with pytest.raises(MistralSuiteError, match="fix or delete it"):
        storage.check_updatable(path)
    with pytest.raises(MistralSuiteError, match="Cannot write .*missing"):
        storage.check_updatable(folder / "missing" / "file.json")
    assert sorted(p.name for p in folder.iterdir()) == ["file.json"]  # nothing left behind


def test_each_write_has_a_temporary_file_of_its_own(folder, monkeypatch):
    seen: list[str] = []
    replace = storage.os.replace

    def recording_replace(source, target):
        seen.append(str(source))
        replace(source, target)

    monkeypatch.setattr(storage.os, "replace", recording_replace)
    for number in range(3):
        storage.write_json_atomic(folder / "file.json", {"n": number})
    assert len(set(seen)) == 3 and all(Path(name).parent == folder for name in seen)


def test_the_lock_excludes_other_threads_and_gives_up_after_its_timeout(folder):
    path = folder / "file.json"
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with storage.locked(path):
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        started = time.monotonic()
        with pytest.raises(MistralSuiteError, match="stayed locked"):
            with storage.locked(path, timeout=0.3):
                pass
        assert 0.3 <= time.monotonic() - started < 5
    finally:
        release.set()
        holder.join()
    with storage.locked(path, timeout=1):
        pass


# --- races: 8 writers at once ------------------------------------------------------------------------


def run_together(count: int, work) -> list:
    """``work(i)`` for i in range(count) on as many threads, released at the same instant."""
    barrier = threading.Barrier(count)

    def start(number: int):
        barrier.wait(10)
        return work(number)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return [future.result(timeout=RACE_TIMEOUT) for future in [pool.submit(start, i) for i in range(count)]]


def test_concurrent_servers_add_and_local_add_lose_nothing(user_dir, tmp_path):
    """The commands themselves (`servers add`, `local add`, parsed by click as from the command line) on 8 threads
    released at the same instant, a few rounds: every entry must survive, and no writer may fail."""
    from _llm_mistral_suite.commands import servers_add
    from _llm_mistral_suite.local.commands import local_add_command

    model = tiny_gguf(tmp_path / "tiny.gguf")
    rounds = 3
    for round_number in range(rounds):
        run_together(WRITERS, lambda i: servers_add.main(
            [f"box-{round_number}-{i}", f"http://127.0.0.1:{9000 + i}/v1"], standalone_mode=False))
        run_together(WRITERS, lambda i: local_add_command.main(
            [str(model), "--name", f"tiny-{round_number}-{i}"], standalone_mode=False))
    servers = json.loads(servers_path().read_text())
    local = json.loads(local_registry_path().read_text())["models"]
    assert sorted(servers) == sorted(f"box-{r}-{i}" for r in range(rounds) for i in range(WRITERS))
    assert sorted(local) == sorted(f"tiny-{r}-{i}" for r in range(rounds) for i in range(WRITERS))
    assert not [p for p in user_dir.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_batch_jobs_are_all_remembered(user_dir):
    """The batch jobs file (issue 13) goes through the same locked update."""
    from _llm_mistral_suite.batch import jobs_path, remember_job

    run_together(WRITERS, lambda i: remember_job(f"job-{i}", {"kind": "chat", "number": i}))
    assert sorted(json.loads(jobs_path().read_text())) == [f"job-{i}" for i in range(WRITERS)]


def test_eight_llm_processes_adding_servers_at_once(llm_env, user_dir, tmp_path):
    """End to end: 8 `llm mistral servers add` and 8 `llm mistral local add` processes at the same time."""
    env = {**llm_env, **ONLY_THIS_PLUGIN}
    models = [tiny_gguf(tmp_path / f"model-{i}.gguf") for i in range(WRITERS)]
    commands = [("mistral", "servers", "add", f"box-{i}", f"http://127.0.0.1:{9000 + i}") for i in range(WRITERS)]
    commands += [("mistral", "local", "add", str(model)) for model in models]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda args: run_llm_process(*args, env=env, timeout=RACE_TIMEOUT), commands))
    assert time.monotonic() - started < RACE_TIMEOUT
    for result in results:
        assert_cli_ok(result)
    listing = assert_cli_ok(run_llm_process("mistral", "servers", "list", env=env))
    assert all(f"box-{i}: http://127.0.0.1:{9000 + i}/v1" in listing for i in range(WRITERS)), listing
    assert sorted(json.loads(local_registry_path().read_text())["models"]) == [f"model-{i}" for i in range(WRITERS)]


# --- damaged files never break llm ---------------------------------------------------------------------


def test_a_servers_file_with_bad_fields_breaks_nothing(user_dir):
    servers_path().write_text(json.dumps({
        "good": {"url": "http://127.0.0.1:9001/v1", "aliases": ["g"]},
        "bad-aliases": {"url": "http://127.0.0.1:9002/v1", "aliases": [1, None]},
        "bad-url": {"url": 5},
        "no-url": {"model": "m"},
        "bad-kind": {"url": "http://127.0.0.1:9003/v1", "embedding": "yes"},
        "../escape": {"url": "http://127.0.0.1:9004/v1"},
        "not-an-object": ["http://127.0.0.1:9005/v1"],
        "spaces-url": {"url": "http://127.0.0.1 :9006/v1"},
    }))
    for args in (("models",), ("aliases", "list"), ("mistral", "servers", "list"), ("models", "list", "--options")):
        result = invoke_llm(*args)
        assert_cli_ok(result)
        assert "good" in result.stdout or args == ("aliases", "list")
        assert "bad-aliases" not in result.stdout and "bad-url" not in result.stdout
    storage._warned.clear()
    warned = warnings_of(invoke_llm("mistral", "servers", "list").stderr)
    assert len(warned) == 7, warned  # one per bad entry, each naming the file and the entry
    for name in ("bad-aliases", "bad-url", "no-url", "bad-kind", "../escape", "not-an-object", "spaces-url"):
        assert sum(f"server {name!r}" in line and str(servers_path()) in line for line in warned) == 1, name
    assert llm.get_model("g").model_id == "good"


def test_a_catalog_cache_with_bad_fields_breaks_nothing(user_dir):
    catalog_cache_path().write_text(json.dumps({"data": [
        {"id": "mistral-large-latest", "max_context_length": "big"},
        {"id": "good-new-model", "max_context_length": 32768, "capabilities": {"completion_chat": True}},
        {"id": "bad-caps", "capabilities": {"vision": "yes"}},
        {"id": 7},
        "not a card",
    ]}))
    result = invoke_llm("mistral", "models")
    listing = assert_cli_ok(result)
    assert "mistral/good-new-model" in listing and "mistral/mistral-large-latest" in listing  # built in stays
    assert "bad-caps" not in listing
    warned = warnings_of(result.stderr)
    assert len(warned) == 4 and all(str(catalog_cache_path()) in line for line in warned), warned
    assert any("'mistral-large-latest'" in line and '"max_context_length"' in line for line in warned)
    assert any("card 3" in line for line in warned) and any("card 4" in line for line in warned)


def test_registries_with_bad_fields_break_nothing(user_dir, tmp_path, without_llm_llama_cpp):
    model = tiny_gguf(tmp_path / "ok.gguf")
    local_registry_path().write_text(json.dumps({"models": {
        "ok": {"path": str(model), "aliases": ["ok-alias"]},
        "bad-aliases": {"path": str(model), "aliases": [None]},
        "no-path": {"aliases": []},
        "bad path": {"path": str(model)},
    }}))
    llama_cpp_models_path().parent.mkdir()
    llama_cpp_models_path().write_text(json.dumps({"theirs": {"path": str(model)}, "broken": {"path": 7}}))
    result = invoke_llm("models")
    assert_cli_ok(result)
    assert "mistral-local/ok" in result.stdout and "mistral-local/theirs" in result.stdout
    warned = warnings_of(result.stderr)
    assert len(warned) == 4, warned
    assert sum(str(local_registry_path()) in line for line in warned) == 3
    assert any(str(llama_cpp_models_path()) in line and "'broken'" in line for line in warned)


@pytest.mark.parametrize("which", ["servers", "registry", "catalog", "llama-cpp"])
def test_a_directory_in_place_of_a_file_breaks_nothing(user_dir, which, without_llm_llama_cpp):
    path = {"servers": servers_path, "registry": local_registry_path, "catalog": catalog_cache_path,
            "llama-cpp": llama_cpp_models_path}[which]()
    path.mkdir(parents=True)
    for args in (("models",), ("aliases", "list"), ("mistral", "models"), ("mistral", "servers", "list"),
                 ("mistral", "local", "list")):
        assert_cli_ok(invoke_llm(*args))
    storage._warned.clear()
    result = invoke_llm("models")
    assert warnings_of(result.stderr) == [f"Warning: {path}: cannot be read (it is a directory); ignoring it."]
    if which == "servers":
        assert_cli_error(invoke_llm("mistral", "servers", "add", "x", "http://127.0.0.1:9/v1"),
                         str(path), "it is a directory", "fix or delete it")
    if which == "catalog":  # a cache: refresh would replace it, but a directory cannot be replaced by a file
        assert path.is_dir()


@pytest.mark.parametrize("content", ["{not json", "[]", '"text"'])
def test_a_servers_file_that_is_not_an_object_is_kept_for_the_user(user_dir, content):
    servers_path().write_text(content)
    result = invoke_llm("models")
    assert "llamafile" in assert_cli_ok(result)
    assert len(warnings_of(result.stderr)) == 1 and str(servers_path()) in result.stderr
    assert_cli_error(invoke_llm("mistral", "servers", "add", "x", "http://127.0.0.1:9/v1"), "fix or delete it")
    assert servers_path().read_text() == content  # nothing the user had is overwritten


def test_the_hooks_never_raise_on_damaged_files(user_dir, capsys):
    servers_path().write_text(json.dumps({"x": {"url": 5, "aliases": [1, None]}, "y": None,
                                          "z": {"url": "http://127.0.0.1:9/v1", "aliases": [1]}}))
    local_registry_path().mkdir()
    catalog_cache_path().write_text(json.dumps({"data": {"not": "a list"}}))
    registered: list[tuple[str, tuple]] = []
    suite.register_models(lambda model, *args, aliases=(), **kwargs: registered.append((model.model_id, aliases)))
    suite.register_embedding_models(lambda model, *args, aliases=(), **kwargs: registered.append((model.model_id, aliases)))
    ids = [model_id for model_id, _ in registered]
    assert "llamafile-server" in ids and "mistral/mistral-large-latest" in ids and "mistral/mistral-embed" in ids
    assert not {"x", "y", "z"} & set(ids)  # never registered with aliases that are not names
    assert all(isinstance(alias, str) for _, aliases in registered for alias in aliases)
    err = capsys.readouterr().err
    assert "Error:" not in err and len(warnings_of(err)) == 5, err  # x, y, z, the registry, the cache
