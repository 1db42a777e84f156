"""llamafile and other OpenAI-compatible servers (issue 5): `llm -m llamafile`, `llm mistral servers ...`.

(a) A fake llamafile v1 server written here (chat streams end without ``data: [DONE]`` and carry no usage;
    ``/v1/models`` lists the model path as id); it records every request with its headers.
(b) A real ``python -m llama_cpp.server`` on a tiny random GGUF (skipped without llama-cpp-python[server]).

Every `llm` run has sentinel OpenAI and Mistral keys in its environment: none may ever reach a server.
End-to-end runs use a real `llm` subprocess (``run_llm``); variations run the same CLI in-process (``cli``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import llm
import pytest

from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok, run_llm_process
from inprocess import invoke_llm

OPENAI_SENTINEL = "sk-OPENAI-SENTINEL-41d2"
SENTINELS = (OPENAI_SENTINEL, SENTINEL_KEY)
LLAMAFILE_MODEL_ID = "/models/mixtral-8x7b-instruct-v0.1.Q5_K_M.gguf"  # v1 lists the model path as id
START_HINT = "--server --nobrowser"


# --- a fake llamafile v1 server --------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any
    raw: bytes


class FakeLlamafile:
    """llamafile's default (v1) server as llm sees it. ``script`` holds replies for the next chat requests:
    ``("status", code, body)``, ``("cut", [pieces])`` (a stream that stops without a finish_reason).
    With ``v2=True`` it streams like ``--server --v2``: ``data: [DONE]`` at the end, and a usage chunk
    (``choices: []``) when asked with ``stream_options.include_usage``."""

    def __init__(self, model_id: str = LLAMAFILE_MODEL_ID, v2: bool = False) -> None:
        self.model_id = model_id
        self.v2 = v2
        self.requests: list[Request] = []
        self.script: deque[tuple] = deque()
        self.models_status = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.handle(self)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def __enter__(self) -> "FakeLlamafile":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def chat_bodies(self) -> list[dict]:
        return [r.body for r in self.requests if r.path == "/v1/chat/completions"]

    # serving

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        body = json.loads(raw) if raw else None
        self.requests.append(Request(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, body, raw))
        route = (h.command, h.path.split("?")[0])
        if route == ("GET", "/v1/models"):
            if self.models_status != 200:
                return self.send_json(h, {"error": {"code": 404, "message": "File Not Found"}}, self.models_status)
            return self.send_json(h, {"object": "list", "data": [
                {"id": self.model_id, "object": "model", "created": 1767225600, "owned_by": "llamacpp"}]})
        if route == ("POST", "/v1/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 0.5, -0.25, float(i)]}
                    for i, t in enumerate(inputs)]
            return self.send_json(h, {"object": "list", "model": self.model_id, "data": data})
        if route != ("POST", "/v1/chat/completions"):
            return self.send_json(h, {"error": {"code": 404, "message": "File Not Found"}}, 404)
        step = self.script.popleft() if self.script else None
        if step and step[0] == "status":
            return self.send_json(h, step[2], step[1])
        user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        text = f"echo: {user}"
        if not body.get("stream"):
            return self.send_json(h, {
                "id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": 1767225600,
                "model": body.get("model"), "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}})  # fmt: skip
        pieces = step[1] if step else [text[i : i + 3] for i in range(0, len(text), 3)]
        head = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk", "created": 1767225600,
                "model": body.get("model")}  # fmt: skip
        events = [{**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
        if not step:  # v1: the last chunk has an empty delta and the finish_reason; no usage, no [DONE]
            events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if self.v2 and (body.get("stream_options") or {}).get("include_usage"):
            events.append({**head, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4,
                                                             "total_tokens": 9}})
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for event in events + ["[DONE]"] * self.v2:
            data = f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        h.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def send_json(h: BaseHTTPRequestHandler, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def assert_no_sentinel(*servers: FakeLlamafile) -> None:
    for server in servers:
        for request in server.requests:
            seen = json.dumps(request.headers) + request.raw.decode("utf-8", "replace")
            for sentinel in SENTINELS:
                assert sentinel not in seen, f"{sentinel} reached {server.base_url}: {request}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def llamafile():
    """The fake llamafile; on teardown, no request it received may hold a sentinel key."""
    with FakeLlamafile() as server:
        yield server
    assert_no_sentinel(server)


@pytest.fixture
def server_env(llm_env, llamafile, monkeypatch) -> dict[str, str]:
    """An `llm` environment with sentinel keys everywhere and the llamafile model pointed at the fake."""
    sentinels = {"OPENAI_API_KEY": OPENAI_SENTINEL, "LLM_MISTRAL_KEY": SENTINEL_KEY, "MISTRAL_API_KEY": SENTINEL_KEY}
    for name, value in sentinels.items():  # for in-process runs too
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLM_LLAMAFILE_BASE_URL", llamafile.base_url)
    return {**llm_env, **sentinels, "LLM_LLAMAFILE_BASE_URL": llamafile.base_url}


@pytest.fixture
def run_llm(server_env):
    def run(*args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        return run_llm_process(*args, input=input, env=server_env if env is None else env)

    return run


@pytest.fixture
def cli(server_env):
    def run(*args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        return invoke_llm(*args, input=input, env=env)

    return run


def logs(cli) -> list[dict]:
    return json.loads(assert_cli_ok(cli("logs", "--json", "-n", "0")))


# --- (a) against the fake llamafile v1 -------------------------------------------------------------


def test_prompt_streams_from_a_v1_llamafile(llamafile, run_llm, cli):
    out = assert_cli_ok(run_llm("-m", "llamafile", "hello there"))
    assert out == "echo: hello there\n"
    assert [(r.method, r.path) for r in llamafile.requests] == [
        ("GET", "/v1/models"), ("POST", "/v1/chat/completions")]  # the model name is discovered
    [body] = llamafile.chat_bodies()
    assert body["model"] == LLAMAFILE_MODEL_ID
    assert body["messages"] == [{"role": "user", "content": "hello there"}]
    assert body["stream"] is True
    assert all("authorization" not in r.headers for r in llamafile.requests)  # no key: none sent
    [entry] = logs(cli)
    assert entry["model"] == "llamafile-server" and entry["response"] == "echo: hello there"
    assert entry["response_json"]["finish_reason"] == "stop"


def test_v2_llamafile_stream_with_done_and_usage(cli, server_env):
    with FakeLlamafile(model_id="mixtral-8x7b-instruct-v0.1.Q5_K_M", v2=True) as v2:
        assert assert_cli_ok(cli("-m", "llamafile", "hi", env={"LLM_LLAMAFILE_BASE_URL": v2.base_url})) == "echo: hi\n"
    assert_no_sentinel(v2)
    [entry] = logs(cli)
    assert (entry["input_tokens"], entry["output_tokens"]) == (5, 4)
    assert v2.chat_bodies()[0]["model"] == "mixtral-8x7b-instruct-v0.1.Q5_K_M"


def test_no_stream_and_options(llamafile, cli):
    out = assert_cli_ok(cli("-m", "llamafile", "hi", "--no-stream", "-o", "temperature", "0.5", "-o", "top_p",
                            "0.9", "-o", "max_tokens", "7", "-o", "stop", '["x", "y"]', "-o", "seed", "42"))
    assert out == "echo: hi\n"
    assert_cli_ok(cli("-m", "llamafile-server", "plain", "-o", "stop", "END"))
    first, second = llamafile.chat_bodies()
    assert {k: first[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed")} == {
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 7, "stop": ["x", "y"], "seed": 42}
    assert "stream" not in first
    assert second["stop"] == "END"
    assert not {"temperature", "top_p", "max_tokens", "seed"} & set(second)  # unset options are not sent
    assert logs(cli)[0]["input_tokens"] == 9  # usage of a non-streamed reply is recorded


def test_system_prompt_and_continue(llamafile, cli):
    assert_cli_ok(cli("-m", "llamafile", "one", "-s", "You are terse."))
    assert assert_cli_ok(cli("-c", "two")) == "echo: two\n"
    first, second = llamafile.chat_bodies()
    assert first["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "one"}]
    assert second["messages"] == [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"}, {"role": "user", "content": "two"}]  # fmt: skip


def test_chat_two_turns(llamafile, run_llm):
    result = run_llm("chat", "-m", "llamafile", "-o", "max_tokens", "20", input="first\nsecond\nquit\n")
    out = assert_cli_ok(result)
    assert "echo: first" in out and "echo: second" in out
    first, second = llamafile.chat_bodies()
    assert second["messages"] == [{"role": "user", "content": "first"}, {"role": "assistant", "content": "echo: first"},
                                  {"role": "user", "content": "second"}]
    assert second["max_tokens"] == 20
    assert [r.path for r in llamafile.requests].count("/v1/models") == 1  # discovered once per process


def test_stream_without_finish_reason_is_an_error(llamafile, cli, user_dir):
    llamafile.script.append(("cut", ["par", "tial"]))
    result = cli("-m", "llamafile", "hi")
    assert_cli_error(result, "the llamafile", "ended before it was finished")
    assert result.stdout == "partial"
    assert not (user_dir / "logs.db").exists() or logs(cli) == []


def test_503_while_loading_is_retried(llamafile, cli):
    loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    llamafile.script.extend([("status", 503, loading), ("status", 503, loading)])
    assert assert_cli_ok(cli("-m", "llamafile", "hi")) == "echo: hi\n"
    assert len(llamafile.chat_bodies()) == 3
    llamafile.script.extend([("status", 503, loading)] * 2)
    assert_cli_error(cli("-m", "llamafile", "hi", env={"LLM_MISTRAL_MAX_ATTEMPTS": "2"}),
                     "503", "2 attempts", "Loading model")


def test_server_not_running_fails_fast_with_the_start_command(run_llm, cli, server_env):
    url = f"http://127.0.0.1:{free_port()}/v1"
    env = {**server_env, "LLM_LLAMAFILE_BASE_URL": url, "LLM_MISTRAL_BACKOFF": "3"}  # retries would take ~20 s
    line = assert_cli_error(run_llm("-m", "llamafile", "hi", env=env), url, START_HINT, "LLM_LLAMAFILE_BASE_URL")
    assert "attempts" not in line
    started = time.monotonic()  # timed in-process: a subprocess's start-up varies with the machine's load
    assert_cli_error(cli("-m", "llamafile", "hi", env={"LLM_LLAMAFILE_BASE_URL": url, "LLM_MISTRAL_BACKOFF": "3"}), url)
    assert time.monotonic() - started < 2.5  # no retries on "connection refused"


def test_explicit_key_is_sent(llamafile, cli):
    assert_cli_ok(cli("-m", "llamafile", "hi", "--key", "explicit-local-key"))
    assert {r.headers.get("authorization") for r in llamafile.requests} == {"Bearer explicit-local-key"}


def test_servers_add_list_remove_and_keys(llamafile, run_llm, cli):
    with FakeLlamafile(model_id="served-default") as other:
        assert_cli_ok(cli("mistral", "servers", "add", "vllm-box", other.base_url, "--model", "mixtral-8x22b",
                          "--key-name", "vllm", "--alias", "big", "--alias", "mx22"))
        assert_cli_error(cli("-m", "big", "hi"), "No key found", "llm keys set vllm")
        assert other.requests == []
        assert_cli_ok(cli("keys", "set", "vllm", "--value", "SECRET-VLLM"))
        assert assert_cli_ok(run_llm("-m", "big", "hi")) == "echo: hi\n"
        assert_cli_ok(cli("-m", "mx22", "again", "--no-stream"))
        assert_cli_ok(cli("-m", "llamafile", "local"))
        assert_no_sentinel(other)
    assert [r.path for r in other.requests] == ["/v1/chat/completions"] * 2  # --model: no discovery
    assert {r.headers["authorization"] for r in other.requests} == {"Bearer SECRET-VLLM"}
    assert [b["model"] for b in other.chat_bodies()] == ["mixtral-8x22b"] * 2
    assert all("authorization" not in r.headers for r in llamafile.requests)  # its key stays with its server

    listing = assert_cli_ok(cli("mistral", "servers", "list"))
    assert f"llamafile-server: {llamafile.base_url}" in listing
    assert "vllm-box" in listing and "mixtral-8x22b" in listing and "key vllm" in listing and "big, mx22" in listing
    rows = {row["name"]: row for row in json.loads(assert_cli_ok(cli("mistral", "servers", "list", "--json")))}
    assert rows["vllm-box"] | {"aliases": None} == {"name": "vllm-box", "url": other.base_url, "model": "mixtral-8x22b",
                                                    "key_name": "vllm", "aliases": None, "embedding": False}
    assert rows["vllm-box"]["aliases"] == ["big", "mx22"]
    assert "vllm-box" in assert_cli_ok(cli("models", "list"))

    assert_cli_ok(cli("mistral", "servers", "remove", "vllm-box"))
    assert "vllm-box" not in assert_cli_ok(cli("mistral", "servers", "list"))
    assert_cli_error(cli("-m", "big", "hi"), "Unknown model")
    assert_cli_error(cli("mistral", "servers", "remove", "vllm-box"), "No server named")


def test_servers_add_url_and_name_checks(cli):
    assert_cli_ok(cli("mistral", "servers", "add", "ollama", "http://127.0.0.1:11434/"))
    assert "ollama: http://127.0.0.1:11434/v1, chat" in assert_cli_ok(cli("mistral", "servers", "list"))
    for name in ("llamafile", "llamafile-server"):
        result = cli("mistral", "servers", "add", name, "http://127.0.0.1:9/v1")
        assert result.returncode == 2 and "built in" in result.stderr
    result = cli("mistral", "servers", "add", "x", "localhost:8000")
    assert result.returncode == 2 and "base URL" in result.stderr


def test_discovery_without_models_endpoint(llamafile, cli):
    llamafile.models_status = 404
    assert_cli_ok(cli("mistral", "servers", "add", "bare", llamafile.base_url))
    assert_cli_error(cli("-m", "bare", "hi"), "/models", "--model MODEL")
    assert llamafile.chat_bodies() == []


def test_wrong_url_gives_a_404_about_the_url(llamafile, cli):
    wrong = llamafile.base_url.removesuffix("/v1") + "/api"
    assert_cli_ok(cli("mistral", "servers", "add", "wrong", wrong, "--model", "m"))
    line = assert_cli_error(cli("-m", "wrong", "hi"), "404", wrong + "/chat/completions", "Check its URL")
    assert "refresh" not in line  # not the advice for Mistral's API


def test_async_prompt(llamafile, cli):
    assert assert_cli_ok(cli("-m", "llamafile", "hi", "--async")) == "echo: hi\n"
    assert assert_cli_ok(cli("-m", "llamafile", "ho", "--async", "--no-stream")) == "echo: ho\n"
    assert all("authorization" not in r.headers for r in llamafile.requests)


def test_async_prompt_looks_the_model_up_without_blocking_the_event_loop(llamafile, monkeypatch):
    import asyncio

    import llm

    from _llm_mistral_suite import servers

    def blocking(*args, **kwargs):
        raise AssertionError("a blocking request inside the event loop")

    monkeypatch.setattr(servers, "request_json", blocking)
    monkeypatch.setattr(servers, "_discovered_models", {})
    monkeypatch.setenv("LLM_LLAMAFILE_BASE_URL", llamafile.base_url)

    async def ask() -> str:
        return await llm.get_async_model("llamafile").prompt("hi").text()

    assert asyncio.run(ask()) == "echo: hi"
    assert [r.path for r in llamafile.requests] == ["/v1/models", "/v1/chat/completions"]


def test_embedding_server(llamafile, cli, run_llm):
    assert_cli_ok(cli("mistral", "servers", "add", "local-embed", llamafile.base_url, "--embedding", "--alias", "le"))
    assert "local-embed" in assert_cli_ok(cli("embed-models"))
    assert "local-embed" not in assert_cli_ok(cli("models", "list"))  # not a chat model
    vector = json.loads(assert_cli_ok(run_llm("embed", "-m", "le", "-c", "hello world")))
    assert vector == [11.0, 0.5, -0.25, 0.0]
    [request] = [r for r in llamafile.requests if r.path == "/v1/embeddings"]
    assert request.body == {"model": LLAMAFILE_MODEL_ID, "input": ["hello world"]}
    assert "authorization" not in request.headers
    docs = "\n".join(json.dumps({"id": str(i), "content": "x" * i}) for i in range(1, 6))
    assert_cli_ok(cli("embed-multi", "notes", "-", "--format", "nl", "-m", "local-embed", input=docs))
    assert "5" in assert_cli_ok(cli("collections", "list"))


# --- issue 10: names, URLs, passwords and settings of added servers ------------------------------------


@pytest.mark.parametrize("name, alias, needle", [
    ("evil", "mistral-small", "'mistral-small' is already an alias of mistral/mistral-small-latest"),
    ("evil", "mistral/mistral-large-latest", "not a plain name"),  # an alias is checked as a name is
    ("mistral-small", None, "is already an alias of mistral/mistral-small-latest"),
    ("gpt-4o", None, "'gpt-4o' is already a model's id"),  # llm's own OpenAI models
    ("4o", None, "an alias of gpt-4o"),
    ("mistral/mistral-large-latest", None, "not a plain name"),
    ("", None, "not a plain name"),
    ("..", None, "not a plain name"),
    ("../x", None, "not a plain name"),
    ("a/b", None, "not a plain name"),
    ("a b", None, "not a plain name"),
])  # fmt: skip
def test_a_server_cannot_take_over_another_models_name(llamafile, cli, name, alias, needle):
    args = ("mistral", "servers", "add", name, llamafile.base_url) + (("--alias", alias) if alias else ())
    result = cli(*args)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "evil" not in assert_cli_ok(cli("mistral", "servers", "list"))
    if alias or name in ("mistral-small", "mistral/mistral-large-latest"):
        assert llm.get_model(alias or name).model_id.startswith("mistral/")  # still Mistral's
    assert llamafile.requests == []


def test_an_alias_of_another_server_is_refused_but_a_server_keeps_its_own(llamafile, cli):
    assert_cli_ok(cli("mistral", "servers", "add", "one", llamafile.base_url, "--alias", "shared"))
    result = cli("mistral", "servers", "add", "two", llamafile.base_url, "--alias", "shared")
    assert result.returncode == 2 and "'shared' is already an alias of one" in result.stderr
    assert_cli_ok(cli("mistral", "servers", "add", "one", llamafile.base_url, "--alias", "shared"))  # re-adding


@pytest.mark.parametrize("alias", ["", "a/b", "x y", "..", "../x"])
def test_an_alias_must_be_a_plain_name_as_a_name_must(cli, alias):
    """`--alias ''` used to be added ("Added"), then skipped by every `llm` command with a warning."""
    result = cli("mistral", "servers", "add", "box", "http://127.0.0.1:9/v1", "--alias", "ok", "--alias", alias)
    assert result.returncode == 2 and f"{alias!r} is not a plain name" in result.stderr, result.stderr
    assert "--alias" in result.stderr and "box" not in assert_cli_ok(cli("mistral", "servers", "list"))


def test_an_alias_given_twice_is_kept_once(cli):
    assert_cli_ok(cli("mistral", "servers", "add", "box", "http://127.0.0.1:9/v1", "--alias", "b", "--alias", "b"))
    rows = json.loads(assert_cli_ok(cli("mistral", "servers", "list", "--json")))
    assert [row["aliases"] for row in rows if row["name"] == "box"] == [["b"]]


def test_names_are_checked_under_the_lock_so_two_adds_cannot_claim_one_alias(cli, user_dir, monkeypatch):
    """The check used to run before the lock was taken: an add that held the lock meanwhile went unseen."""
    from _llm_mistral_suite import storage

    read = storage._read_for_update

    def after_another_add(path, replace_damaged):  # the other `llm` wrote while this one waited for the lock
        if path.name == "mistral-suite-servers.json" and not path.exists():
            path.write_text(json.dumps({"other": {"url": "http://127.0.0.1:9/v1", "aliases": ["shared"]}}))
        return read(path, replace_damaged)

    monkeypatch.setattr(storage, "_read_for_update", after_another_add)
    result = cli("mistral", "servers", "add", "mine", "http://127.0.0.1:9/v1", "--alias", "shared")
    assert result.returncode == 2 and "'shared' is already an alias of other" in result.stderr, result.stderr
    assert list(json.loads((user_dir / "mistral-suite-servers.json").read_text())) == ["other"]


@pytest.mark.parametrize("url, needle", [
    ("http://127.0.0.1 :8000/v1", "no spaces"),
    ("http://exa mple.com/v1", "no spaces"),
    ("http:///v1", "base URL"),
    ("http://:8000/v1", "base URL"),
    ("http://127.0.0.1:99999/v1", "Port out of range"),
    ("http://127.0.0.1:0/v1", "port 0"),
    ("http://127.0.0.1:80a/v1", "not a valid URL"),
    ("ftp://127.0.0.1/v1", "base URL"),
    ("localhost:8000", "base URL"),
    ("http://127.0.0.1:8000/v1?key=1", "without ?query"),
])  # fmt: skip
def test_server_urls_are_checked(cli, url, needle):
    result = cli("mistral", "servers", "add", "box", url)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert "box" not in assert_cli_ok(cli("mistral", "servers", "list"))


@pytest.mark.parametrize("url, stored", [
    ("HTTP://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
    ("HTTPS://Example.COM/api/", "https://Example.COM/api"),
    (" http://[::1]:8000/v1 ", "http://[::1]:8000/v1"),
])  # fmt: skip
def test_valid_urls_in_any_case_are_accepted(cli, url, stored):
    assert_cli_ok(cli("mistral", "servers", "add", "box", url))
    assert f"box: {stored}, chat" in assert_cli_ok(cli("mistral", "servers", "list"))


def test_a_password_in_a_server_url_is_never_printed(llamafile, cli, run_llm):
    secret = "hunter2-SECRET"
    with_password = llamafile.base_url.replace("http://", f"http://alice:{secret}@")
    added = assert_cli_ok(cli("mistral", "servers", "add", "box", with_password, "--model", "m"))
    shown = llamafile.base_url.replace("http://", "http://alice:***@")
    assert shown in added
    assert f"box: {shown}, chat" in assert_cli_ok(cli("mistral", "servers", "list"))
    assert json.loads(assert_cli_ok(cli("mistral", "servers", "list", "--json")))[1]["url"] == shown
    assert_cli_ok(run_llm("-m", "box", "hi"))  # the password still works: sent as the URL's credentials
    assert llamafile.requests[-1].headers["authorization"].startswith("Basic ")
    down = f"http://alice:{secret}@127.0.0.1:{free_port()}/v1"
    assert_cli_ok(cli("mistral", "servers", "add", "down", down, "--model", "m"))
    result = run_llm("-m", "down", "hi")
    assert_cli_error(result, "not reachable", "alice:***@")
    assert_cli_error(cli("-m", "down", "hi", "--no-stream"), "alice:***@")
    for output in (result.stdout, result.stderr, added):
        assert secret not in output


def test_adding_a_server_again_keeps_what_is_not_given(llamafile, cli, run_llm):
    """`servers add vllm NEWURL` after `--model big --key-name vkey --alias bigm` used to lose all three."""
    with FakeLlamafile(model_id="served-default") as moved:
        assert_cli_ok(cli("mistral", "servers", "add", "vllm", llamafile.base_url, "--model", "big",
                          "--key-name", "vkey", "--alias", "bigm"))
        assert_cli_ok(cli("keys", "set", "vkey", "--value", "VKEY-SECRET"))
        said = assert_cli_ok(cli("mistral", "servers", "add", "vllm", moved.base_url))
        assert said.startswith(f"Updated vllm (chat) at {moved.base_url}")
        assert "kept its model big; key name vkey; aliases bigm (--replace forgets them)" in said
        assert assert_cli_ok(run_llm("-m", "bigm", "hi")) == "echo: hi\n"
        [request] = moved.requests
        assert request.body["model"] == "big" and request.headers["authorization"] == "Bearer VKEY-SECRET"
        said = assert_cli_ok(cli("mistral", "servers", "add", "vllm", moved.base_url, "--alias", "newname"))
        assert "aliases" not in said.split("kept")[1]  # what is given replaces, the rest is kept
        assert_cli_error(cli("-m", "bigm", "hi"), "Unknown model")
        said = assert_cli_ok(cli("mistral", "servers", "add", "vllm", moved.base_url, "--replace", "--embedding"))
        assert said == f"Replaced vllm (embeddings) at {moved.base_url}\n"  # it used to say "Added"
        rows = json.loads(assert_cli_ok(cli("mistral", "servers", "list", "--json")))
        [row] = [r for r in rows if r["name"] == "vllm"]
        assert row == {"name": "vllm", "url": moved.base_url, "model": None, "key_name": None, "aliases": [],
                       "embedding": True}
        said = assert_cli_ok(cli("mistral", "servers", "add", "vllm", llamafile.base_url))
        assert "kept its kind embeddings" in said  # --chat would change it back


# --- (b) a real llama_cpp.server on a tiny GGUF ----------------------------------------------------


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """``python -m llama_cpp.server`` on a tiny random GGUF, on a free port, for the whole session."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:  # find_spec: no need to load llama.cpp in this process
        pytest.skip("llama-cpp-python is not installed")
    for module in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            pytest.skip("llama-cpp-python[server] is not installed")
    from gguf_factory import write_tiny_gguf

    model = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-mistral.gguf")
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama-server") / "server.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "512", "--n_threads", "1", "--verbose", "False"],
        stdout=log, stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 60 s")
            time.sleep(0.1)
        yield url, str(model)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_real_llama_cpp_server_as_llamafile(llama_server, run_llm, cli, server_env):
    url, model_path = llama_server
    env = {**server_env, "LLM_LLAMAFILE_BASE_URL": url}
    out = assert_cli_ok(run_llm("-m", "llamafile", "hello", "-o", "max_tokens", "4", "-s", "Be brief.", env=env))
    assert out.strip() and len(out.split()) <= 4  # the tiny model emits whole words, max_tokens of them
    out = assert_cli_ok(cli("-m", "llamafile", "hello", "--no-stream", "-o", "max_tokens", "3", "-o", "seed", "1",
                            env={"LLM_LLAMAFILE_BASE_URL": url}))
    assert out.strip()
    streamed, whole = logs(cli)
    assert streamed["response_json"]["finish_reason"] == "length"
    assert whole["input_tokens"] and whole["output_tokens"] == 3  # llama_cpp.server reports usage when not streaming
    assert model_path in (whole["resolved_model"] or model_path)


def test_real_llama_cpp_server_added(llama_server, cli):
    url, _ = llama_server
    assert_cli_ok(cli("mistral", "servers", "add", "tiny", url, "--alias", "t"))
    out = assert_cli_ok(cli("chat", "-m", "t", "-o", "max_tokens", "3", input="hello\nagain\nquit\n"))
    assert out.count("\n> ") >= 2 or out.count("> ") >= 2
    first, second = logs(cli)
    assert first["response"].strip() and second["response"].strip()
    assert first["conversation_id"] == second["conversation_id"]


def test_an_empty_prompt_to_a_server_is_refused_locally(llamafile, cli):
    assert_cli_error(cli("-m", "llamafile", ""), "The prompt is empty")
    assert llamafile.requests == []
