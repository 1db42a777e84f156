"""End-to-end tests of Mistral API chat (issue 2): the installed `llm` CLI as a subprocess against the
fake Mistral server on loopback.

Each test has a scenario (its `llm` runs, declared with ``@scenario`` just above it). The scenarios of
the selected tests are played in parallel, each with its own fake server and llm user dir, before the
first test of this module; every request body a fake receives is validated against
``ChatCompletionRequest``. Each test then checks what its scenario did.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import (
    SENTINEL_KEY,
    CLISession,
    assert_cli_error,
    assert_cli_ok,
    play_scenarios,
    require_recorded,
    selected_scenarios,
)
from api_mock import INTERLEAVED_THINKING, SIGNED_DELTAS
from fake_mistral import FileReply, JSONReply, Reply, ResetReply, SSEReply, chat_stream_events, error_reply

LLM_VERSION = version("llm")
WIRE_ID = re.compile(r"[A-Za-z0-9]{9}")
QUESTION = "What is 17 times 19? Answer briefly."  # the prompt of the magistral recordings
FOLLOW_UP = "What is that result plus one? Answer only the number."

SCENARIOS: dict[str, Callable[[CLISession], Any]] = {}


def scenario(name: str | None = None):
    """Register the `llm` runs of the test named ``test_<name>`` (default: the function's name)."""

    def register(fn: Callable[[CLISession], Any]) -> Callable[[CLISession], Any]:
        SCENARIOS[name or fn.__name__] = fn
        return fn

    return register


@pytest.fixture(scope="module")
def played(request, tmp_path_factory) -> dict[str, CLISession]:
    return play_scenarios(selected_scenarios(request, SCENARIOS), tmp_path_factory.mktemp("cli"))


@pytest.fixture
def s(request, played) -> CLISession:
    """The played scenario of this test (a failure or skip while playing it is raised here)."""
    return played[request.node.name.removeprefix("test_")].check()


def assert_user_dir_clean(user_dir: Path, key: str = SENTINEL_KEY) -> None:
    """No file llm or the plugin wrote (logs.db, -wal, -shm, caches) contains the key, in any form."""
    scanned = [p for p in user_dir.rglob("*") if p.is_file()]
    assert any(p.name == "logs.db" for p in scanned), scanned
    for path in scanned:
        raw = path.read_bytes()
        for form in (key.encode(), key.encode("utf-16-le"), key.encode("utf-16-be"), key[3:].encode()):
            assert form not in raw, f"key found in {path}"


# --- prompts ---------------------------------------------------------------------------------------


@scenario()
def prompt_streams(s: CLISession) -> None:
    s.run("-m", "mistral-large", "hello there")


def test_prompt_streams(s):
    assert assert_cli_ok(s.results[0]) == "echo: hello there\n"
    [body] = s.bodies()
    with sqlite3.connect(s.user_dir / "logs.db") as db:
        [(conversation_id,)] = db.execute("select id from threads").fetchall()
    assert body == {"model": "mistral-large-latest", "messages": [{"role": "user", "content": "hello there"}],
                    "stream": True, "prompt_cache_key": conversation_id}
    [request] = s.fake.requests
    assert request.headers["authorization"] == f"Bearer {SENTINEL_KEY}"
    assert request.headers["accept"] == "text/event-stream"


@scenario()
def no_stream(s: CLISession) -> None:
    s.run("-m", "mistral-small", "--no-stream", "hi")


def test_no_stream(s):
    assert assert_cli_ok(s.results[0]) == "echo: hi\n"
    [body] = s.bodies()
    assert "stream" not in body and body["model"] == "mistral-small-latest"


@scenario()
def chat_two_turns(s: CLISession) -> None:
    s.run("chat", "-m", "mistral-large", input="first question\nsecond question\nquit\n")


def test_chat_two_turns(s):
    out = assert_cli_ok(s.results[0])
    assert "> echo: first question\n" in out and "> echo: second question\n" in out
    first, second = s.bodies()
    assert first["messages"] == [{"role": "user", "content": "first question"}]
    assert second["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "echo: first question"},
        {"role": "user", "content": "second question"},
    ]


@scenario()
def system_prompt_and_continue(s: CLISession) -> None:
    s.run("-m", "mistral-medium", "-s", "You are a pirate.", "first")
    s.run("-c", "second")


def test_system_prompt_and_continue(s):
    assert [assert_cli_ok(r) for r in s.results] == ["echo: first\n", "echo: second\n"]
    first, second = s.bodies()
    assert first["messages"] == [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "first"}]
    assert second["model"] == "mistral-medium-latest"
    assert second["messages"] == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": "second"},
    ]


@scenario()
def tools_call_then_answer(s: CLISession) -> None:
    s.run("-m", "mistral-large", "-T", "llm_version", "Use the tool please")


def test_tools_call_then_answer(s):
    assert assert_cli_ok(s.results[0]) == f"tool said: {LLM_VERSION}\n"
    first, second = s.bodies()
    assert [t["function"]["name"] for t in first["tools"]] == ["llm_version"]
    user, assistant, tool = second["messages"]
    [call] = assistant["tool_calls"]
    assert WIRE_ID.fullmatch(call["id"])
    assert call["function"] == {"name": "llm_version", "arguments": "{}"}
    assert tool == {"role": "tool", "content": LLM_VERSION, "tool_call_id": call["id"], "name": "llm_version"}
    assert "name" not in user and "name" not in assistant


@scenario()
def tools_without_server_ids(s: CLISession) -> None:
    call = {"index": 0, "function": {"name": "llm_version", "arguments": "{}"}}  # no "id"
    s.fake.queue(SSEReply(chat_stream_events([], finish_reason="tool_calls", tool_calls=[call])))
    s.run("-m", "mistral-large", "-T", "llm_version", "Use the tool please")


def test_tools_without_server_ids(s):
    """A call the server gave no id gets a 9-character one, and the same id is replayed on both sides."""
    assert assert_cli_ok(s.results[0]) == f"tool said: {LLM_VERSION}\n"
    _, assistant, tool = s.bodies()[1]["messages"]
    [call] = assistant["tool_calls"]
    assert WIRE_ID.fullmatch(call["id"]) and tool["tool_call_id"] == call["id"]


@scenario()
def schema_is_strict(s: CLISession) -> None:
    s.run("-m", "mistral-large", "--schema", "name, age int", "invent a person")


def test_schema_is_strict(s):
    assert_cli_ok(s.results[0])
    [body] = s.bodies()
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"] == {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"], "additionalProperties": False,
    }  # fmt: skip


@scenario()
def async_prompts(s: CLISession) -> None:
    s.run("-m", "mistral-large", "--async", "hello async")
    s.run("-m", "mistral-large", "--async", "--no-stream", "hello again")


def test_async_prompts(s):
    assert [assert_cli_ok(r) for r in s.results] == ["echo: hello async\n", "echo: hello again\n"]
    streamed, plain = s.bodies()
    assert streamed["stream"] is True and "stream" not in plain


@scenario()
def only_set_options_are_sent(s: CLISession) -> None:
    s.run("-m", "mistral-large", "-o", "temperature", "0.2", "-o", "max_tokens", "5", "hi")


def test_only_set_options_are_sent(s):
    assert_cli_ok(s.results[0])
    [body] = s.bodies()
    assert set(body) == {"model", "messages", "stream", "temperature", "max_tokens", "prompt_cache_key"}
    assert (body["temperature"], body["max_tokens"]) == (0.2, 5)


@scenario()
def prompt_cache_and_service_tier(s: CLISession) -> None:
    usage = {"prompt_tokens": 900, "completion_tokens": 2, "total_tokens": 902,
             "prompt_tokens_details": {"cached_tokens": 768}, "service_tier": "priority"}
    s.fake.queue(SSEReply(chat_stream_events(["Hi", "!"], usage=usage)))
    s.run("-m", "mistral-large", "-o", "service_tier", "auto",
          "-o", "guardrails", '{"moderation_llm_v2": {"action": "block"}, "block_on_error": true}', "hello")
    s.run("-c", "again")  # the conversation's id is the cache key of every turn
    s.run("-c", "-o", "prompt_cache_key", "none", "once more")
    s.run("-m", "mistral-small", "-o", "prompt_cache_key", "my-app-v2", "--no-stream", "other")
    s.run("logs", "--json", "-n", "0")
    s.run("-m", "mistral-small", "-o", "guardrails", '[{"moderation": true}]', "x")
    s.run("-m", "mistral-small", "-o", "guardrails", "block", "x")
    s.run("-m", "mistral-small", "-o", "service_tier", "priority", "x")


def test_prompt_cache_and_service_tier(s):
    first, again, off, own_key, logs, *bad = s.results
    for result in (first, again, off, own_key, logs):
        assert_cli_ok(result)
    expected = [("guardrails", "unknown guardrail setting 'moderation'"), ("guardrails", "must be JSON"),
                ("service_tier", "'auto' or 'standard_only'")]
    for result, (option, detail) in zip(bad, expected):
        assert_cli_error(result, option)  # llm's form: "Error: <option>", then the reason
        assert detail in result.stderr
    bodies = s.bodies()
    assert len(bodies) == 4  # the refused options sent nothing
    with sqlite3.connect(s.user_dir / "logs.db") as db:
        thread_ids = [row[0] for row in db.execute("select thread_id from turns order by id")]
    assert thread_ids[0] == thread_ids[1] == thread_ids[2] != thread_ids[3]
    assert [b.get("prompt_cache_key") for b in bodies] == [thread_ids[0], thread_ids[0], None, "my-app-v2"]
    assert bodies[0]["service_tier"] == "auto"
    assert bodies[0]["guardrails"] == [{"moderation_llm_v2": {"action": "block"}, "block_on_error": True}]
    assert "service_tier" not in bodies[1] and "guardrails" not in bodies[1]  # options are per prompt
    # The cached prompt tokens and the tier the service used are logged with the usage.
    logged = json.loads(logs.stdout)
    first_log = next(entry for entry in logged if entry["prompt"] == "hello")
    assert (first_log["input_tokens"], first_log["output_tokens"]) == (900, 2)
    assert json.loads(first_log["token_details"]) == {"cached_tokens": 768, "service_tier": "priority"}


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@scenario()
def image_attachment(s: CLISession) -> None:
    image = s.user_dir.parent / "pixel.png"
    image.write_bytes(PNG)
    s.run("-m", "mistral-large", "-a", str(image), "What is in this image?")


def test_image_attachment(s):
    assert assert_cli_ok(s.results[0]) == "echo: What is in this image?\n"
    [body] = s.bodies()
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is in this image?"}
    url = image["image_url"]["url"] if isinstance(image["image_url"], dict) else image["image_url"]
    assert (image["type"], url) == ("image_url", "data:image/png;base64," + base64.b64encode(PNG).decode())


# --- keys ------------------------------------------------------------------------------------------


@scenario()
def key_option_overrides(s: CLISession) -> None:
    s.run("-m", "mistral-large", "--key", "sk-from-option", "hi")


def test_key_option_overrides(s):
    assert_cli_ok(s.results[0])
    assert s.fake.requests[0].headers["authorization"] == "Bearer sk-from-option"


@scenario()
def mistral_api_key_fallback(s: CLISession) -> None:
    env = {k: v for k, v in s.env.items() if k != "LLM_MISTRAL_KEY"}
    s.run("-m", "mistral-large", "hi", env=env | {"MISTRAL_API_KEY": "sk-fallback"})


def test_mistral_api_key_fallback(s):
    assert_cli_ok(s.results[0])
    assert s.fake.requests[0].headers["authorization"] == "Bearer sk-fallback"


# --- failures: one "Error: ..." line, a non-zero exit, no traceback --------------------------------


@dataclass
class Failure:
    args: tuple[str, ...]
    needles: tuple[str, ...]  # in the error line
    requests: int  # the fake must have seen exactly this many
    replies: tuple[Reply, ...] = ()
    env: dict[str, str | None] = field(default_factory=dict)  # None removes a variable
    stdout: str = ""  # what stdout starts with


FAILURES = {
    "no-key": Failure(("-m", "mistral-large", "hi"), ("llm keys set mistral",), 0, env={"LLM_MISTRAL_KEY": None}),
    "retired-model": Failure(
        ("-m", "mistral/open-mixtral-8x7b", "hi"),
        ("retired", "mistral-small-latest", "llm mistral local download mixtral-8x7b", "llamafile"), 0),
    "unknown-model-404": Failure(
        ("-m", "mistral-nemo", "hi"),
        ("404", "Invalid model: open-mistral-nemo", "llm mistral local download mistral-nemo", "llm mistral refresh"), 1,
        (error_reply(404, "Invalid model: open-mistral-nemo", type="invalid_model", code="1500"),)),
    "bad-option": Failure(("-m", "mistral-large", "-o", "temperature", "3", "hi"), ("temperature",), 0),
    "reasoning-effort-on-a-plain-model": Failure(
        ("-m", "mistral-large", "-o", "reasoning_effort", "high", "hi"), ("reasoning_effort",), 0),
    "stream-cut": Failure(
        ("-m", "mistral-large", "tell me"), ("cut", "incomplete"), 1,  # no retry once text was shown
        (SSEReply(chat_stream_events(["Hello", " wor", "ld", "!"]), cut_after=3),),
        stdout="Hello wor"),  # what arrived is shown, then the error: not a short answer with exit 0
    "stream-reset": Failure(
        ("-m", "mistral-large", "tell me"), ("dropped the connection",), 1,
        (SSEReply(chat_stream_events(["Hello", " wor", "ld", "!"]), reset=True, done=False),)),
    "malformed-chunk": Failure(
        ("-m", "mistral-large", "tell me"), ("malformed",), 1,
        (SSEReply([*chat_stream_events(["Hello", " there"])[:2], "{this is not json"]),)),
    "500-forever": Failure(
        ("-m", "mistral-large", "hi"), ("500", "after 3 attempts", "Internal server error"), 3,
        tuple(error_reply(500, "Internal server error", type="internal_error") for _ in range(5)),
        env={"LLM_MISTRAL_MAX_ATTEMPTS": "3"}),
}  # fmt: skip


def _failure_scenario(case: Failure) -> Callable[[CLISession], None]:
    def play(s: CLISession) -> None:
        s.fake.queue(*case.replies)
        env = {k: v for k, v in (s.env | case.env).items() if v is not None}
        s.run(*case.args, env=env)

    return play


for _name, _case in FAILURES.items():
    scenario(f"failure[{_name}]")(_failure_scenario(_case))


@pytest.mark.parametrize("name", FAILURES)
def test_failure(s, name):
    case = FAILURES[name]
    assert_cli_error(s.results[0], *case.needles)
    assert len(s.fake.requests) == case.requests
    assert s.results[0].stdout.startswith(case.stdout)


def _unfinished_stream(done: bool) -> SSEReply:
    """Text chunks and never a finish_reason (as some proxies and compatible servers send), with or
    without ``data: [DONE]`` at the end (the server closes the stream cleanly either way)."""
    events = chat_stream_events(["Hello", " world"])
    events[-1]["choices"][0]["finish_reason"] = None
    return SSEReply(events, done=done)


@scenario()
def done_without_finish_reason(s: CLISession) -> None:
    s.fake.queue(_unfinished_stream(done=True), _unfinished_stream(done=False))
    s.run("-m", "mistral-large", "hi")
    s.run("-m", "mistral-large", "hi")


def test_done_without_finish_reason(s):
    complete, unfinished = s.results
    assert assert_cli_ok(complete) == "Hello world\n"  # [DONE] proves the server finished
    assert_cli_error(unfinished, "ended before it was finished", "incomplete")
    assert unfinished.stdout.startswith("Hello world")


@scenario()
def server_not_listening(s: CLISession) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s.run("-m", "mistral-large", "hi", LLM_MISTRAL_BASE_URL=f"http://127.0.0.1:{port}/v1",
          LLM_MISTRAL_MAX_ATTEMPTS="2")
    return port


def test_server_not_listening(s):
    assert_cli_error(s.results[0], "not reachable", f"127.0.0.1:{s.value}")


# --- faults the plugin recovers from ---------------------------------------------------------------

RECOVERIES: dict[str, tuple[tuple[Reply, ...], tuple[str, ...]]] = {  # replies before the fake answers, args
    "429-retry-after": ((error_reply(429, "Requests rate limit exceeded", retry_after=0.3),), ()),
    "503-twice": ((error_reply(503, "Service unavailable", type="internal_error"),
                   error_reply(503, "Still unavailable")), ()),
    "reset-before-response": ((ResetReply(), ResetReply()), ()),
    "reset-no-stream": ((ResetReply(),), ("--no-stream",)),
}  # fmt: skip


def _recovery_scenario(replies: tuple[Reply, ...], args: tuple[str, ...]) -> Callable[[CLISession], float]:
    def play(s: CLISession) -> float:
        s.fake.queue(*replies)
        started = time.monotonic()
        s.run("-m", "mistral-large", *args, "hello after trouble")
        return time.monotonic() - started

    return play


for _name, (_replies, _args) in RECOVERIES.items():
    scenario(f"recovery[{_name}]")(_recovery_scenario(_replies, _args))


@pytest.mark.parametrize("name", RECOVERIES)
def test_recovery(s, name):
    assert assert_cli_ok(s.results[0]) == "echo: hello after trouble\n"
    assert len(s.fake.requests) == len(RECOVERIES[name][0]) + 1
    assert len({rec.raw for rec in s.fake.requests}) == 1  # the same request each time
    if name == "429-retry-after":
        assert s.value >= 0.3  # Retry-After was waited out


# --- the key never reaches the logs ----------------------------------------------------------------


@scenario()
def sentinel_key_never_stored(s: CLISession) -> None:
    s.run("-m", "mistral-large", "-T", "llm_version", "Use the tool please", "-o", "temperature", "0.1")
    s.run("-c", "and now without tools", "--schema", "name, age int")
    s.fake.queue(error_reply(400, f"Invalid key {SENTINEL_KEY} for this request"))
    s.run("-m", "mistral-large", "this one fails")
    s.fake.queue(SSEReply([chat_stream_events(["par"])[0], {"object": "error", "message": f"bad {SENTINEL_KEY}"}]))
    s.run("-m", "mistral-large", "this one fails mid-stream")
    s.run("logs", "--json", "-n", "0")


def test_sentinel_key_never_stored(s):
    tools, schema, failed, failed_mid_stream, logs = s.results
    for result in (tools, schema, logs):
        assert_cli_ok(result)
    assert_cli_error(failed, "400", "Invalid key")
    assert_cli_error(failed_mid_stream, "error mid-stream")
    assert len(json.loads(logs.stdout)) >= 3
    # The key did reach the server, as a header only...
    assert {rec.headers["authorization"] for rec in s.fake.requests} == {f"Bearer {SENTINEL_KEY}"}
    assert all(SENTINEL_KEY.encode() not in rec.raw for rec in s.fake.requests)
    # ...and never any output, error text or stored file.
    for result in s.results:
        assert SENTINEL_KEY not in result.stdout + result.stderr
    assert_user_dir_clean(s.user_dir)


# --- recordings of the real service ----------------------------------------------------------------


def _thinking(content: list[dict]) -> str:
    return "".join(t["text"] for c in content if c["type"] == "thinking" for t in c["thinking"])


def _shape(content: list[dict]) -> list[str]:
    """Chunk types with runs collapsed: many streamed thinking chunks and one joined chunk compare equal."""
    types: list[str] = []
    for c in content:
        if not types or types[-1] != c["type"]:
            types.append(c["type"])
    return types


MAGISTRAL_ANSWERS = {
    "magistral-stream.sse": (),
    "magistral-completion.json": ("--no-stream",),
    "magistral-none-completion.json": ("--no-stream", "-o", "reasoning_effort", "none"),
}


def _magistral_answer_scenario(file: str, args: tuple[str, ...]) -> Callable[[CLISession], None]:
    def play(s: CLISession) -> None:
        s.fake.queue(FileReply(require_recorded() / file))
        s.run("-m", "magistral-small", "-o", "max_tokens", "512", *args, QUESTION)

    return play


for _file, _args in MAGISTRAL_ANSWERS.items():
    scenario(f"recorded_magistral_answer[{_file}]")(_magistral_answer_scenario(_file, _args))


@pytest.mark.parametrize("file", MAGISTRAL_ANSWERS)
def test_recorded_magistral_answer(s, file):
    assert assert_cli_ok(s.results[0]) == "323\n"
    [body] = s.bodies()
    assert body["model"] == "magistral-small-latest" and body["max_tokens"] == 512
    assert body.get("stream", False) is file.endswith(".sse")
    if "none" in file:
        assert body["reasoning_effort"] == "none"


REASONING_REPLAYS = {  # answer recorded with reasoning_effort=high -> the recorded follow-up
    "magistral-high-stream.sse": "magistral-stream-replay.json",
    "magistral-high-completion.json": "magistral-completion-replay.json",
}


def _reasoning_replay_scenario(answer: str, replay: str) -> Callable[[CLISession], dict]:
    def play(s: CLISession) -> dict:
        recorded = require_recorded()
        recording = json.loads((recorded / replay).read_text())
        s.fake.queue(FileReply(recorded / answer), JSONReply(recording["response"]))
        stream = () if answer.endswith(".sse") else ("--no-stream",)
        s.run("-m", "magistral-small", "-o", "reasoning_effort", "high", "-o", "max_tokens", "512", *stream, QUESTION)
        with sqlite3.connect(s.user_dir / "logs.db") as db:  # what was stored before `llm -c` reads it
            stored = db.execute(
                "select p.type, p.text from parts p join messages m on m.hash = p.message_hash "
                "where m.role = 'assistant' order by p.position"
            ).fetchall()
        s.run("-c", FOLLOW_UP, "--no-stream", "-o", "reasoning_effort", "none", "-o", "max_tokens", "64")
        return {"recording": recording, "stored": stored}

    return play


for _answer, _replay in REASONING_REPLAYS.items():
    scenario(f"recorded_reasoning_replay[{_answer}]")(_reasoning_replay_scenario(_answer, _replay))


@pytest.mark.parametrize("answer", REASONING_REPLAYS)
def test_recorded_reasoning_replay(s, answer):
    first, follow = s.results
    expected = s.value["recording"]["request"]["messages"]
    thinking = _thinking(expected[1]["content"])
    # The answer alone on stdout; streamed reasoning on stderr (llm's choice), never on stdout.
    assert assert_cli_ok(first) == "323\n"
    if answer.endswith(".sse"):
        assert first.stderr.startswith(thinking[:60])
    # Stored as a reasoning part, then the text.
    assert s.value["stored"] == [("reasoning", thinking), ("text", "323")]
    # `llm -c` sends the thinking back, in the structure of the recorded replay request.
    assert assert_cli_ok(follow) == "324\n"
    body = s.bodies()[1]
    assert "stream" not in body and body["reasoning_effort"] == "none" and body["max_tokens"] == 64
    sent = body["messages"]
    assert [m["role"] for m in sent] == [m["role"] for m in expected] == ["user", "assistant", "user"]
    assert (sent[0], sent[2]) == (expected[0], expected[2])
    assert _shape(sent[1]["content"]) == _shape(expected[1]["content"]) == ["thinking", "text"]
    assert _thinking(sent[1]["content"]) == thinking
    assert sent[1]["content"][-1] == expected[1]["content"][-1] == {"type": "text", "text": "323"}
    if answer.endswith(".sse"):  # one block: the streamed fragments, each as the service sent it, and `closed`
        [block] = sent[1]["content"][:-1]
        fragments = [t for c in expected[1]["content"] if c["type"] == "thinking" for t in c["thinking"]]
        assert block == {"type": "thinking", "thinking": fragments, "closed": True}
    else:  # exactly the recorded replay the service accepted
        assert sent[1] == expected[1]




def _signed_stream() -> SSEReply:
    head = {"id": "r1", "object": "chat.completion.chunk", "created": 1, "model": "magistral-small-2509"}
    last = len(SIGNED_DELTAS) - 1
    return SSEReply([{**head, "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if i == last else None}]}
                     for i, delta in enumerate(SIGNED_DELTAS)])


def _signed_blocks_scenario(flags: tuple[str, ...]) -> Callable[[CLISession], None]:
    def play(s: CLISession) -> None:
        s.fake.queue(_signed_stream())
        s.run("-m", "magistral-small", *flags, QUESTION)
        s.run("-c", *flags, FOLLOW_UP)

    return play


for _flags in ((), ("--async",)):
    scenario(f"signed_blocks_continued[{'async' if _flags else 'sync'}]")(_signed_blocks_scenario(_flags))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_signed_blocks_continued(s, mode):
    """Two signed thinking blocks: stored as two reasoning parts in logs.db, sent back by `llm -c` each with
    its own signature and its fragments."""
    first, follow = s.results
    assert assert_cli_ok(first) == "323\n"
    assert "First, multiply.Then check." in first.stderr
    assert assert_cli_ok(follow).startswith("echo: " + FOLLOW_UP)
    assistant = s.bodies()[1]["messages"][1]
    assert assistant == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": [{"type": "text", "text": "First, "}, {"type": "text", "text": "multiply."}],
         "signature": "sig-one", "closed": True},
        {"type": "thinking", "thinking": [{"type": "text", "text": "Then "}, {"type": "text", "text": "check."}],
         "signature": "sig-two", "closed": True},
        {"type": "text", "text": "323"},
    ]}


@scenario()
def interleaved_thinking_continued(s: CLISession) -> None:
    head = {"id": "r1", "object": "chat.completion.chunk", "created": 1, "model": "magistral-small-2509"}
    last = len(INTERLEAVED_THINKING) - 1
    s.fake.queue(SSEReply([{**head, "choices": [{"index": 0, "delta": {"content": [item]},
                                                 "finish_reason": "stop" if i == last else None}]}
                           for i, item in enumerate(INTERLEAVED_THINKING)]))
    s.run("-m", "magistral-small", QUESTION)
    s.run("-c", FOLLOW_UP)


def test_interleaved_thinking_continued(s):
    """Through logs.db: an empty signed block and thinking between texts go back in the order they came."""
    first, follow = s.results
    assert assert_cli_ok(first) == "ansmore\n"
    assert_cli_ok(follow)
    assert s.bodies()[1]["messages"][1] == {"role": "assistant", "content": INTERLEAVED_THINKING}


# --- conversations logged by llm-mistral, continued with `llm -c` ------------------------------------


def _legacy_log(user_dir: Path, model_id: str) -> None:
    """A conversation as llm 0.35 and older logged it for llm-mistral (the legacy ``responses`` table), with the
    options llm-mistral before 0.16 logged on every prompt (its defaults, ``safe_mode`` among them)."""
    import sqlite_utils
    from llm.migrations import migrate

    db = sqlite_utils.Database(user_dir / "logs.db")
    migrate(db)
    db["conversations"].insert({"id": "01j0legacyconversation0000", "name": "Name a colour", "model": model_id})
    db["responses"].insert({
        "id": "01j0legacyresponse00000000", "model": model_id, "prompt": "Name a colour", "system": "Be brief",
        "prompt_json": None, "options_json": json.dumps({"temperature": 0.7, "top_p": 1, "safe_mode": False}),
        "response": "Blue.", "response_json": None, "conversation_id": "01j0legacyconversation0000",
        "duration_ms": 900, "datetime_utc": "2024-11-02T10:00:00"})  # fmt: skip


def _llm_mistral_016_log(user_dir: Path, model_id: str) -> None:
    """A reasoning reply as llm-mistral 0.16 logged it with llm 0.36: a part per signed thinking block, the
    raw chunk kept in provider_metadata as ``content_chunk``."""
    import llm
    import sqlite_utils
    from llm.migrations import migrate
    from llm.parts import StreamEvent

    blocks = [("Seventeen times twenty is 340.", "sig-a"), (" Minus seventeen: 323.", "sig-b")]

    class LlmMistral016(llm.Model):
        can_stream = True

        def __init__(self) -> None:
            self.model_id = model_id

        def execute(self, prompt, stream, response, conversation):  # type: ignore[no-untyped-def]
            for index, (text, signature) in enumerate(blocks):
                raw = {"type": "thinking", "thinking": [{"type": "text", "text": text}], "signature": signature}
                yield StreamEvent(type="reasoning", chunk=text, part_index=index,
                                  provider_metadata={"mistral": {"content_chunk": raw, "signature": signature}})
            yield StreamEvent(type="text", chunk="323", part_index=len(blocks))

    db = sqlite_utils.Database(user_dir / "logs.db")
    migrate(db)
    response = LlmMistral016().conversation().prompt(QUESTION)
    assert response.text() == "323"
    response.log_to_db(db)


@scenario()
def continue_llm_mistral_conversations(s: CLISession) -> None:
    _legacy_log(s.user_dir, "mistral/mistral-small-2409")
    s.run("-c", "Another one?")
    for path in s.user_dir.glob("logs.db*"):  # a fresh log (and no WAL of the old one)
        path.unlink()
    _llm_mistral_016_log(s.user_dir, "mistral/magistral-medium-2506")
    s.run("-c", FOLLOW_UP)


def test_continue_llm_mistral_conversations(s):
    """Conversations logged under llm-mistral's dated ids continue: the model resolves, the logged options
    validate, and the history (its signed thinking blocks included) is sent back."""
    legacy, reasoning = s.results
    assert assert_cli_ok(legacy) == "echo: Another one?\n"
    assert assert_cli_ok(reasoning) == f"echo: {FOLLOW_UP}\n"
    first, second = s.bodies()
    assert first["model"] == "mistral-small-2409" and first["messages"] == [
        {"role": "system", "content": "Be brief"}, {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"}]
    assert second["model"] == "magistral-medium-2506"
    assert second["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Seventeen times twenty is 340."}],
         "signature": "sig-a"},
        {"type": "thinking", "thinking": [{"type": "text", "text": " Minus seventeen: 323."}], "signature": "sig-b"},
        {"type": "text", "text": "323"}]}


@scenario()
def continue_a_retired_llm_mistral_conversation(s: CLISession) -> None:
    _legacy_log(s.user_dir, "mistral/mistral-small-2402")
    s.run("-c", "Another one?")
    s.run("-c", "-m", "mistral-small", "Another one?")


def test_continue_a_retired_llm_mistral_conversation(s):
    retired, switched = s.results
    assert_cli_error(retired, "mistral-small-2402 was retired", "llm -c -m mistral/mistral-small-latest")
    assert assert_cli_ok(switched) == "echo: Another one?\n"
    [body] = s.bodies()
    assert body["model"] == "mistral-small-latest" and [m["content"] for m in body["messages"]] == [
        "Be brief", "Name a colour", "Blue.", "Another one?"]


@scenario()
def recorded_tool_call_and_answer(s: CLISession) -> None:
    recorded = require_recorded()
    s.fake.queue(FileReply(recorded / "tool-stream-1-tool-call.sse"), FileReply(recorded / "tool-stream-2-answer.sse"))
    s.run("-m", "mistral-large", "-T", "llm_version", "What version of LLM is installed?")


def test_recorded_tool_call_and_answer(s):
    assert assert_cli_ok(s.results[0]) == "The installed version of LLM is 0.26.\n"
    first, second = s.bodies()
    assert [t["function"]["name"] for t in first["tools"]] == ["llm_version"]
    _, assistant, tool = second["messages"]
    assert assistant["tool_calls"] == [
        {"id": "4dI1Jw6NX", "type": "function", "function": {"name": "llm_version", "arguments": "{}"}}]
    assert tool == {"role": "tool", "content": LLM_VERSION, "tool_call_id": "4dI1Jw6NX", "name": "llm_version"}


def test_every_recording_is_replayed(recorded):
    """A recording added to ../shared later must get a test here, not be silently ignored."""
    replayed = {*MAGISTRAL_ANSWERS, *REASONING_REPLAYS, *REASONING_REPLAYS.values(),
                "tool-stream-1-tool-call.sse", "tool-stream-2-answer.sse"}
    files = {p.name for p in recorded.iterdir() if p.is_file()} - {"metadata.json"}
    assert files == replayed
    assert set(json.loads((recorded / "metadata.json").read_text())["fixtures"]) <= replayed


# --- issue 10: an error after part of a streamed reply starts on a line of its own ------------------------


@pytest.mark.parametrize("reply", [
    SSEReply(chat_stream_events(["Hello", " wor", "ld", "!"]), cut_after=3),  # cut before the end
    SSEReply([*chat_stream_events(["Hello", " wor"])[:3], {"object": "error", "message": "overloaded"}]),
])  # fmt: skip
def test_an_error_after_partial_text_starts_on_a_new_line(fake, cli_env, reply):
    fake.queue(reply, reply)
    args = [sys.executable, "-m", "llm", "-m", "mistral-large", "tell me"]
    together = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env,
                              timeout=60)  # one destination, as in a terminal
    assert together.returncode == 1 and together.stdout.startswith("Hello wor\nError: "), together.stdout
    apart = subprocess.run(args, capture_output=True, text=True, env=cli_env, timeout=60)  # stdout to a file
    assert apart.stdout == "Hello wor" and apart.stderr.startswith("Error: "), apart.stderr
