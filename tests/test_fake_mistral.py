"""Tests for the fake Mistral server, with plain httpx."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_mistral import (  # noqa: E402
    FakeMistral,
    FileReply,
    JSONReply,
    RawReply,
    ResetReply,
    SSEReply,
    chat_stream_events,
    count_tokens,
    error_reply,
)

RECORDED = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "recorded"
AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def fake():
    with FakeMistral() as server:
        yield server


@pytest.fixture
def client(fake):
    with httpx.Client(base_url=fake.base_url, headers=AUTH, timeout=5) as c:
        yield c


def sse_data(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def chat(client: httpx.Client, content, **extra) -> httpx.Response:
    body = {"model": "mistral-large-latest", "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/chat/completions", json=body)


def test_chat_echo_and_recording(fake, client):
    r = chat(client, "hello there", temperature=0.2)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "mistral-large-2512"
    assert body["choices"][0]["message"]["content"] == "echo: hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    [rec] = fake.requests
    assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
    assert rec.headers["authorization"] == "Bearer test-key"
    assert rec.body["temperature"] == 0.2 and json.loads(rec.raw) == rec.body


def test_chat_content_chunks(client):
    content = [{"type": "text", "text": "a "}, {"type": "image_url", "image_url": "data:x"}, {"type": "text", "text": "b"}]
    assert chat(client, content).json()["choices"][0]["message"]["content"] == "echo: a b"


def test_chat_stream(client):
    with client.stream("POST", "/chat/completions", json={
        "model": "mistral-small-latest", "stream": True, "messages": [{"role": "user", "content": "stream me please"}],
    }) as r:  # fmt: skip
        assert r.headers["content-type"].startswith("text/event-stream")
        data = sse_data(r)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) > 3
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["model"] == "mistral-small-2512" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: stream me please"
    assert [c["choices"][0]["finish_reason"] for c in chunks].count(None) == len(chunks) - 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" in chunks[-1]
    assert not any("usage" in c for c in chunks[:-1])


def test_keep_alive_for_json_and_streams(fake, client):
    chat(client, "one")
    with client.stream("POST", "/chat/completions", json={
        "model": "m", "stream": True, "messages": [{"role": "user", "content": "two"}]}) as r:  # fmt: skip
        r.read()
    client.get("/models")
    assert len(fake.requests) == 3
    assert len(client._transport._pool.connections) == 1  # one connection reused throughout


def test_tool_call_then_tool_answer(client):
    tools = [{"type": "function", "function": {"name": "llm_version", "parameters": {"type": "object"}}}]
    r = chat(client, "use the tool", tools=tools).json()
    [call] = r["choices"][0]["message"]["tool_calls"]
    assert r["choices"][0]["finish_reason"] == "tool_calls"
    assert re.fullmatch(r"[A-Za-z0-9]{9}", call["id"])
    assert call["function"] == {"name": "llm_version", "arguments": "{}"}
    with client.stream("POST", "/chat/completions", json={
        "model": "m", "stream": True, "tools": tools, "messages": [{"role": "user", "content": "Tool time"}]}) as s:  # fmt: skip
        last = json.loads(sse_data(s)[-2])
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    assert last["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "llm_version"
    messages = [
        {"role": "user", "content": "use the tool"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "0.36", "tool_call_id": call["id"], "name": "llm_version"},
    ]
    r = client.post("/chat/completions", json={"model": "m", "tools": tools, "messages": messages}).json()
    assert r["choices"][0]["message"]["content"] == "tool said: 0.36"
    assert chat(client, "no tools here").json()["choices"][0]["message"]["tool_calls"] is None


def test_auth_retired_and_unknown_path(fake):
    with httpx.Client(base_url=fake.base_url) as c:
        body = {"model": "mistral-large-latest", "messages": [{"role": "user", "content": "x"}]}
        r = c.post("/chat/completions", json=body)
        assert r.status_code == 401 and r.json()["message"] == "Unauthorized" and "request_id" in r.json()
        assert c.post("/chat/completions", json=body, headers={"Authorization": "Bearer bad-key"}).status_code == 401
        r = c.post("/chat/completions", json={**body, "model": "open-mistral-7b"}, headers=AUTH)
        assert r.status_code == 404
        assert r.json() == {"object": "error", "message": "Invalid model: open-mistral-7b",
                            "type": "invalid_model", "param": None, "code": "1500"}  # fmt: skip
        r = c.get("/nope", headers=AUTH)
        assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})


def test_fim(client):
    r = client.post("/fim/completions", json={"model": "codestral-latest", "prompt": "def f(", "suffix": "):"})
    assert r.json()["choices"][0]["message"]["content"] == "MIDDLE(6,2)"
    assert r.json()["model"] == "codestral-2512"
    with client.stream("POST", "/fim/completions", json={"model": "codestral-2508", "prompt": "x", "stream": True}) as s:
        data = sse_data(s)
    assert "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in data[:-1]) == "MIDDLE(1,0)"


def test_embeddings(fake, client):
    r = client.post("/embeddings", json={"model": "mistral-embed", "input": ["alpha", "beta", "alpha"]}).json()
    vectors = [d["embedding"] for d in r["data"]]
    assert [d["index"] for d in r["data"]] == [0, 1, 2] and r["object"] == "list"
    assert len(vectors[0]) == 1024 and vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(math.fsum(x * x for x in vectors[1]), 1.0, rel_tol=1e-4)
    assert r["usage"]["prompt_tokens"] == r["usage"]["total_tokens"] == 5  # alpha 2, beta 1
    r = client.post("/embeddings", json={"model": "codestral-embed", "input": "x"}).json()
    assert len(r["data"][0]["embedding"]) == 1536
    r = client.post("/embeddings", json={"model": "codestral-embed-2505", "input": "x", "output_dimension": 8}).json()
    assert len(r["data"][0]["embedding"]) == 8
    assert fake.embedding_requests == 3


def test_embeddings_limits(fake, client):
    def error(inputs):
        r = client.post("/embeddings", json={"model": "mistral-embed", "input": inputs})
        assert r.status_code == 400 and r.json()["object"] == "error"
        return r.json()["message"]

    assert error(["a"] * 513) == "Too many inputs in request, split into more batches."
    assert client.post("/embeddings", json={"model": "mistral-embed", "input": ["a"] * 512}).status_code == 200
    assert error(["w " * 6000] * 3) == "Too many tokens in batch. Max is 16384 got 18000"
    assert error(["ok", "w " * 9000]) == "Input id 1 has 9000 tokens, exceeding max 8192 tokens."
    assert "empty" in error(["ok", ""])
    fake.max_inputs = 2
    assert error(["a", "b", "c"]).startswith("Too many inputs")


def test_count_tokens_is_pessimistic():
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert count_tokens(text) > len(text) / 4
    assert count_tokens("") == 0 and count_tokens("!!!!") == 4 and count_tokens("hello") == 2


def test_models_list_and_override(fake, client):
    cards = {c["id"]: c for c in client.get("/models").json()["data"]}
    assert {"mistral-large-latest", "mistral-large-2512", "mistral-new-2611", "codestral-2508"} <= set(cards)
    assert cards["codestral-2508"]["capabilities"]["completion_fim"] is True
    ft = cards["ft:open-mistral-7b:abc123:20240101:xyz"]
    assert ft["type"] == "fine-tuned" and ft["root"] == "open-mistral-7b"
    deprecated = [c for c in cards.values() if c["deprecation"]]
    assert deprecated and deprecated[0]["deprecation_replacement_model"]
    fake.models = [{"id": "only-one", "object": "model"}]
    assert client.get("/models").json() == {"object": "list", "data": [{"id": "only-one", "object": "model"}]}


def test_queued_replies_fifo_then_default(fake, client):
    fake.queue(
        JSONReply({"custom": True}, 201, {"X-Extra": "1"}),
        error_reply(429, "Rate limit exceeded", retry_after=2),
        RawReply(503, b"upstream down", {"Content-Type": "text/plain"}),
    )
    r = client.get("/models")
    assert (r.status_code, r.json(), r.headers["x-extra"]) == (201, {"custom": True}, "1")
    r = chat(client, "x")
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json() == {"object": "error", "message": "Rate limit exceeded", "type": "invalid_request_error",
                        "param": None, "code": "3505"}  # fmt: skip
    r = client.post("/embeddings", json={})
    assert (r.status_code, r.content) == (503, b"upstream down")
    assert chat(client, "back to default").json()["choices"][0]["message"]["content"] == "echo: back to default"


def test_sse_reply_raw_strings_and_no_done(fake, client):
    fake.queue(SSEReply([{"a": 1}, '{"choices": ['], done=False))
    with client.stream("POST", "/chat/completions", json={}) as r:
        assert sse_data(r) == ['{"a": 1}', '{"choices": [']


def test_cut_stream_ends_early(fake, client):
    events = chat_stream_events(["Hel", "lo ", "wor", "ld"])
    fake.queue(SSEReply(events, cut_after=2))
    with client.stream("POST", "/chat/completions", json={}) as r:
        data = sse_data(r)  # a clean EOF: no exception, just fewer events and no [DONE]
    assert [json.loads(d) for d in data] == events[:2]
    assert chat(client, "still alive").status_code == 200


def test_reset_mid_stream(fake, client):
    fake.queue(SSEReply(chat_stream_events(["a", "b", "c"]), cut_after=2, reset=True))
    seen = []
    with pytest.raises(httpx.TransportError):
        with client.stream("POST", "/chat/completions", json={}) as r:
            for line in r.iter_lines():
                seen.append(line)
    assert len([line for line in seen if line.startswith("data: ")]) == 2  # events before the RST arrive
    assert chat(client, "still alive").status_code == 200


def test_reset_reply(fake, client):
    fake.queue(ResetReply())
    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json={"model": "m"})
    assert fake.requests[0].body == {"model": "m"}
    assert chat(client, "still alive").status_code == 200


@pytest.mark.skipif(not RECORDED.is_dir(), reason="../shared/conformance/recorded not available")
@pytest.mark.parametrize("name", sorted(p.name for p in RECORDED.glob("*.sse")) + ["magistral-completion.json"])
def test_file_reply_byte_for_byte(fake, client, name):
    fake.queue(FileReply(RECORDED / name))
    r = client.post("/chat/completions", json={})
    assert r.content == (RECORDED / name).read_bytes()
    assert r.headers["content-type"].startswith("text/event-stream" if name.endswith(".sse") else "application/json")


def test_latency_concurrency_and_prompt_stop():
    fake = FakeMistral(latency=0.2).start()
    results = []

    def call():
        with httpx.Client(base_url=fake.base_url, headers=AUTH) as c:
            results.append(chat(c, "hi").status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4 and time.monotonic() - start < 0.6
    assert fake.max_concurrency_seen == 4
    # stop() is prompt even with an idle keep-alive connection and a slow stream in progress
    fake.latency = 0
    c = httpx.Client(base_url=fake.base_url, headers=AUTH)
    chat(c, "keep me alive")
    fake.queue(SSEReply([{"n": i} for i in range(100)], event_delay=0.05))
    stream_client = httpx.Client(base_url=fake.base_url, headers=AUTH)
    with stream_client.stream("POST", "/chat/completions", json={}) as r:
        start = time.monotonic()
        fake.stop()
        with pytest.raises(httpx.TransportError):
            r.read()
    assert time.monotonic() - start < 0.5
    c.close()
    stream_client.close()


def test_main_serves():
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "fake_mistral.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = proc.stdout.readline().split()[-1]
        assert httpx.get(base_url + "/models", headers=AUTH).json()["object"] == "list"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
