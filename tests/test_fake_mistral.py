"""Tests for the fake Mistral server, with plain httpx."""

from __future__ import annotations

import base64
import functools
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
    parse_multipart,
    schema_example,
)
from media_files import SAMPLE_PAGES, audio_info, data_uri, image_info, pdf_bytes, png_bytes, wav_bytes  # noqa: E402

RECORDED = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "recorded"
OPENAPI = RECORDED.parent / "mistral-openapi.json"
AUTH = {"Authorization": "Bearer test-key"}
REPORT = pdf_bytes(SAMPLE_PAGES, header="ACME Corp", footer="Page {n}", images_on=[1])
SPEECH_SSE = "#/paths/~1v1~1audio~1speech/post/responses/200/content/text~1event-stream/schema"
SPEECH_JSON = "#/paths/~1v1~1audio~1speech/post/responses/200/content/application~1json/schema"


@functools.lru_cache(maxsize=None)
def _spec_validator(ref: str):
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = json.loads(OPENAPI.read_text())
    if not ref.startswith("#"):
        ref = f"#/components/schemas/{ref}"
    schema = spec
    for key in ref[2:].split("/"):
        schema = schema[key.replace("~1", "/").replace("~0", "~")]
    if "$defs" in schema:  # an inline schema whose "#/$defs/..." refs point into itself
        return jsonschema.Draft202012Validator(schema)
    registry = Registry().with_resource("urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": "urn:spec" + ref}, registry=registry)


def assert_spec(instance, ref: str) -> None:
    """``instance`` matches a schema of Mistral's spec: a component name or a JSON pointer ("#/paths/...").
    Nothing is checked where ../shared is absent."""
    if not OPENAPI.exists():
        return
    errors = [f"/{'/'.join(map(str, e.path))}: {e.message}" for e in _spec_validator(ref).iter_errors(instance)]
    assert not errors, f"{ref}: {errors[:3]}\n{json.dumps(instance)[:1500]}"


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
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    assert fake.max_concurrency_seen == 4  # the four slow requests were served at the same time
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
    assert time.monotonic() - start < 2.5  # not after the stream's 5 s (a bound for loaded machines, not a speed)
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


# --- files, documents, audio and batches -----------------------------------------------------------

PDF_DOC = {"type": "document_url", "document_url": data_uri(REPORT, "application/pdf")}
NO_FILE = "00000000-0000-4000-8000-000000000000"


def pick(mapping: dict, *keys: str) -> tuple:
    return tuple(mapping[key] for key in keys)


def upload(client: httpx.Client, name: str, data: bytes, purpose: str | None = "ocr", **fields) -> httpx.Response:
    return client.post(
        "/files", files={"file": (name, data)}, data={**({"purpose": purpose} if purpose else {}), **fields}
    )


def ocr(client: httpx.Client, document: dict, **options) -> httpx.Response:
    return client.post("/ocr", json={"model": "mistral-ocr-latest", "document": document, **options})


def transcribe(client: httpx.Client, audio: bytes, **fields) -> httpx.Response:
    return client.post(
        "/audio/transcriptions", files={"file": ("speech.wav", audio)}, data={"model": "voxtral-mini-latest", **fields}
    )


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event name, data) of a stream of named events."""
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: ") :])))
    return events


def test_files_upload_list_get_content_delete(fake, client):
    r = upload(client, "report.pdf", REPORT)
    info = r.json()
    assert r.status_code == 200
    assert_spec(info, "CreateFileResponse")
    assert pick(info, "bytes", "filename", "purpose") == (len(REPORT), "report.pdf", "ocr")
    assert pick(info, "source", "mimetype") == ("upload", "application/pdf")
    jsonl = b'{"custom_id": "a", "body": {}}\n{"custom_id": "b", "body": {}}\n'
    batch = upload(client, "in.jsonl", jsonl, "batch", expiry="2").json()
    assert (batch["num_lines"], batch["mimetype"], batch["sample_type"]) == (2, "application/jsonl", "batch_request")
    assert batch["expires_at"] == batch["created_at"] + 7200
    listing = client.get("/files").json()
    assert_spec(listing, "ListFilesResponse")
    assert [f["id"] for f in listing["data"]] == [batch["id"], info["id"]] and listing["total"] == 2  # newest first
    assert [f["id"] for f in client.get("/files", params={"purpose": "ocr"}).json()["data"]] == [info["id"]]
    page = client.get("/files", params={"page": 1, "page_size": 1, "include_total": "false"}).json()
    assert [f["id"] for f in page["data"]] == [info["id"]] and page["total"] is None
    assert client.get("/files", params={"search": "IN.J"}).json()["total"] == 1
    assert client.get("/files", params={"page_size": 0}).status_code == 422
    got = client.get(f"/files/{info['id']}").json()
    assert_spec(got, "GetFileResponse")
    assert got["deleted"] is False and got["id"] == info["id"]
    content = client.get(f"/files/{info['id']}/content")
    assert content.content == REPORT and content.headers["content-type"] == "application/octet-stream"
    assert 'filename="report.pdf"' in content.headers["content-disposition"]
    assert (fake.upload_count, fake.delete_count, len(fake.uploads)) == (2, 0, 2)
    deleted = client.delete(f"/files/{info['id']}").json()
    assert_spec(deleted, "DeleteFileResponse")
    assert deleted == {"id": info["id"], "object": "file", "deleted": True}
    assert (fake.upload_count, fake.delete_count, [f.id for f in fake.uploads]) == (2, 1, [batch["id"]])
    for method in ("get", "delete"):
        r = getattr(client, method)(f"/files/{info['id']}")
        assert r.status_code == 404 and r.json()["object"] == "error"
    r = client.get("/files/not-a-uuid/content")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "file_id"]
    assert_spec(r.json(), "HTTPValidationError")
    assert client.put("/files").status_code == 405


def test_form_requests_are_recorded(fake, client):
    payload = b"binary\r\n--not-the-boundary\r\n\x00\xff"
    client.post(
        "/files",
        files={"file": ("blob.bin", payload, "application/x-thing")},
        data={"purpose": "batch", "tags[]": ["a", "b"]},
    )
    rec = fake.requests[-1]
    assert rec.body is None and rec.route == "/v1/files"
    assert rec.form == {"purpose": ["batch"], "tags": ["a", "b"]} and rec.form_value("purpose") == "batch"
    assert rec.sent_form == {"purpose": ["batch"], "tags[]": ["a", "b"]}
    upload_ = rec.files["file"]
    assert (upload_.filename, upload_.content_type, upload_.data) == ("blob.bin", "application/x-thing", payload)
    client.post("/audio/transcriptions?x=1", data={"model": "m", "context_bias": ["p", "q"]})  # urlencoded
    rec = fake.requests[-1]
    assert rec.form == {"model": ["m"], "context_bias": ["p", "q"]} and rec.query == {"x": ["1"]} and rec.files == {}
    client.post("/audio/transcriptions", data={"model": "m", "context_bias[]": ["p"], "context_bias": ["q"]})
    rec = fake.requests[-1]
    assert rec.form["context_bias"] == ["p", "q"] and rec.sent_form["context_bias[]"] == ["p"]  # either spelling


def test_parse_multipart_edge_cases():
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="list[]"\r\n\r\n1\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="list[]"\r\n\r\n2\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="x.bin"\r\nContent-Type: image/png\r\n\r\n'
        b"\r\n--\x00\r\n"
        b"--xyz\r\nContent-Disposition: form-data\r\n\r\nnameless\r\n"
        b"--xyz--\r\nepilogue"
    )
    form, files = parse_multipart(body, 'multipart/form-data; boundary="xyz"')
    assert form == {"list[]": ["1", "2"]}  # under the names sent
    assert (files["f"].filename, files["f"].content_type, files["f"].data) == ("x.bin", "image/png", b"\r\n--\x00")
    with pytest.raises(ValueError):
        parse_multipart(body, "multipart/form-data")


def test_upload_validation_and_size_limit():
    with FakeMistral(max_upload_bytes=10) as fake, httpx.Client(base_url=fake.base_url, headers=AUTH) as client:
        r = upload(client, "big.pdf", b"x" * 11)
        assert r.status_code == 413 and r.json()["object"] == "error"
        assert "maximum allowed size of 10 bytes" in r.json()["message"]
        assert upload(client, "small.txt", b"x" * 10).json()["mimetype"] == "text/plain"
        assert fake.upload_count == 1
        r = client.post("/files", data={"purpose": "ocr"})  # no file part
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]
        r = upload(client, "a.txt", b"x", "images")
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "enum"
        assert upload(client, "a.txt", b"x", expiry="soon").status_code == 422
        assert upload(client, "a.txt", b"x", None).json()["purpose"] == "fine-tune"
        assert fake.upload_count == 2


def test_signed_urls(fake, client):
    file_id = upload(client, "my report.pdf", REPORT).json()["id"]
    r = client.get(f"/files/{file_id}/url", params={"expiry": 2})
    assert_spec(r.json(), "GetSignedUrlResponse")
    url = r.json()["url"]
    assert url.startswith(f"{fake.root_url}/signed/{file_id}/my%20report.pdf?se=") and "&sp=r&sig=" in url
    got = httpx.get(url)  # no key needed
    assert got.content == REPORT and got.headers["content-type"] == "application/pdf"
    tampered = httpx.get(url.replace("sig=", "sig=0"))
    assert tampered.status_code == 403 and b"AuthenticationFailed" in tampered.content
    start = time.time()
    fake.clock = lambda: start + 2 * 3600 + 5
    assert httpx.get(url).status_code == 403  # expired
    fake.clock = time.time
    for expiry in (0, 169, "x"):
        assert client.get(f"/files/{file_id}/url", params={"expiry": expiry}).status_code == 422
    client.delete(f"/files/{file_id}")
    gone = httpx.get(url)
    assert gone.status_code == 404 and b"BlobNotFound" in gone.content
    assert client.get(f"/files/{file_id}/url").status_code == 404
    assert httpx.get(fake.host_file("a b.txt", b"hosted", "text/plain")).content == b"hosted"
    assert httpx.get(f"{fake.root_url}/hosted/missing").status_code == 404


def test_ocr_pdf(client):
    r = ocr(client, PDF_DOC)
    body = r.json()
    assert r.status_code == 200
    assert_spec(body, "OCRResponse")
    assert body["model"] == "mistral-ocr-2512" and body["document_annotation"] is None
    assert body["usage_info"] == {"pages_processed": 3, "doc_size_bytes": len(REPORT)}
    first, second, third = body["pages"]
    assert [p["index"] for p in body["pages"]] == [0, 1, 2]
    assert first["markdown"] == "ACME Corp\n\nQuarterly report\n\nRevenue grew in every region.\n\nPage 1"
    assert first["dimensions"] == {"dpi": 200, "height": 2200, "width": 1700}
    assert pick(first, "header", "footer", "images", "tables", "hyperlinks") == (None, None, [], [], [])
    assert second["markdown"] == (
        "ACME Corp\n\n| Region | Revenue |\n| --- | --- |\n| North | 120 |\n| South | 95 |\n\n"
        "Figures are in thousands.\n\n![img-0.jpeg](img-0.jpeg)\n\nPage 2"
    )
    assert second["images"] == [
        {
            "id": "img-0.jpeg",
            "top_left_x": 200,
            "top_left_y": 522,
            "bottom_right_x": 600,
            "bottom_right_y": 722,
            "image_base64": None,
            "image_annotation": None,
        }
    ]
    assert third["markdown"].endswith("The outlook is stable.\n\nPage 3")


def test_ocr_options(client):
    schema = {
        "type": "object", "required": ["title", "year", "tags"],
        "properties": {"title": {"type": "string"}, "year": {"type": "integer"}, "extra": {"type": "string"},
                       "tags": {"type": "array", "items": {"type": "string"}}},
    }  # fmt: skip
    bbox = {
        "type": "object",
        "properties": {"kind": {"type": "string", "enum": ["chart", "photo"]}},
        "required": ["kind"],
    }
    body = ocr(
        client,
        PDF_DOC,
        pages=[1, 2],
        extract_header=True,
        extract_footer=True,
        table_format="html",
        include_image_base64=True,
        document_annotation_prompt="Extract the title",
        document_annotation_format={"type": "json_schema", "json_schema": {"name": "doc", "schema": schema}},
        bbox_annotation_format={"type": "json_schema", "json_schema": {"name": "bbox", "schema": bbox}},
    ).json()
    assert_spec(body, "OCRResponse")
    second, third = body["pages"]
    assert [p["index"] for p in body["pages"]] == [1, 2] and body["usage_info"]["pages_processed"] == 2
    assert (second["header"], second["footer"], third["footer"]) == ("ACME Corp", "Page 2", "Page 3")
    assert second["markdown"] == "[tbl-0.html](tbl-0.html)\n\nFigures are in thousands.\n\n![img-0.jpeg](img-0.jpeg)"
    assert second["tables"] == [
        {
            "id": "tbl-0.html",
            "format": "html",
            "content": "<table><tr><th>Region</th><th>Revenue</th></tr><tr><td>North</td><td>120</td></tr>"
            "<tr><td>South</td><td>95</td></tr></table>",
        }
    ]
    [image] = second["images"]
    mime, _, payload = image["image_base64"].partition(";base64,")
    assert mime == "data:image/png" and image_info(base64.b64decode(payload)).width == 4
    assert json.loads(image["image_annotation"]) == {"kind": "chart"}
    assert json.loads(body["document_annotation"]) == {
        "title": "Figures are in thousands.",
        "year": 1,
        "tags": ["Figures are in thousands."],
    }
    body = ocr(client, PDF_DOC, pages="0, 1-2", table_format="markdown").json()
    assert len(body["pages"]) == 3 and body["pages"][1]["header"] is None
    assert body["pages"][1]["markdown"].startswith("ACME Corp\n\n[tbl-0.md](tbl-0.md)\n\n")
    assert body["pages"][1]["tables"][0] == {
        "id": "tbl-0.md",
        "format": "markdown",
        "content": "| Region | Revenue |\n| --- | --- |\n| North | 120 |\n| South | 95 |",
    }


def test_ocr_document_sources(fake, client):
    file_id = upload(client, "report.pdf", REPORT).json()["id"]
    by_file = ocr(client, {"type": "file", "file_id": file_id}).json()
    hosted = fake.host_file("docs/report.pdf", REPORT, "application/pdf")
    by_url = ocr(client, {"type": "document_url", "document_url": hosted, "document_name": "r.pdf"}).json()
    by_signed = ocr(client, {"document_url": client.get(f"/files/{file_id}/url").json()["url"]}).json()
    assert by_file["pages"] == by_url["pages"] == by_signed["pages"] == ocr(client, PDF_DOC).json()["pages"]
    scan = png_bytes(40, 20, text="Hello from a scan")
    for document in (
        {"type": "image_url", "image_url": data_uri(scan, "image/png")},
        {"type": "image_url", "image_url": {"url": fake.host_file("scan.png", scan, "image/png")}},
    ):
        body = ocr(client, document).json()
        assert_spec(body, "OCRResponse")
        assert [(p["index"], p["markdown"], p["dimensions"]) for p in body["pages"]] == [
            (0, "Hello from a scan", {"dpi": 200, "height": 20, "width": 40})
        ]


def test_ocr_errors(fake, client):
    r = ocr(client, {"type": "document_url", "document_url": data_uri(b"not a pdf", "application/pdf")})
    assert r.status_code == 400
    assert r.json() == {
        "object": "error",
        "message": "Document is not a valid PDF.",
        "type": "document_parser_invalid_file",
        "param": None,
        "code": "3740",
    }
    r = ocr(client, PDF_DOC, pages=[3])
    assert r.status_code == 400 and "out of range" in r.json()["message"]
    r = client.post("/ocr", json={"model": "mistral-large-latest", "document": PDF_DOC})
    assert r.status_code == 404 and (r.json()["type"], r.json()["code"]) == ("model_not_found", "3040")
    assert r.json()["message"] == "The model `mistral-large-latest` does not exist for router `ocr`."
    for url in (
        "https://example.com/report.pdf",
        f"{fake.root_url}/hosted/missing.pdf",
        "data:application/pdf;base64,%%",
    ):
        r = ocr(client, {"type": "document_url", "document_url": url})
        assert r.status_code == 400 and r.json()["object"] == "error", url
    assert ocr(client, {"type": "file", "file_id": NO_FILE}).status_code == 404
    unprocessable = [
        client.post("/ocr", json={"document": PDF_DOC}),
        client.post("/ocr", json={"model": "mistral-ocr-latest"}),
        ocr(client, PDF_DOC, pages="1-x"),
        ocr(client, PDF_DOC, pages=[True]),
        ocr(client, {"type": "document_url", "document_url": "ftp://example.com/report.pdf"}),
    ]
    for r in unprocessable:
        assert r.status_code == 422
        assert_spec(r.json(), "HTTPValidationError")
    assert "Document content must be a URL" in unprocessable[-1].json()["detail"][0]["msg"]
    assert ocr(client, PDF_DOC, document_annotation_format={"type": "json_object"}).status_code == 400
    assert ocr(client, PDF_DOC, document_annotation_prompt="only a prompt").status_code == 400


def test_chat_reads_documents(fake, client):
    file_id = upload(client, "report.pdf", REPORT).json()["id"]
    signed = client.get(f"/files/{file_id}/url").json()["url"]
    content = [
        {"type": "text", "text": "Summarise"},
        {"type": "document_url", "document_url": signed, "document_name": "q3.pdf"},
        {"type": "file", "file_id": file_id},
    ]
    reply = chat(client, content).json()["choices"][0]["message"]["content"]
    assert reply == "echo: Summarise [document q3.pdf: 3 pages] [document report.pdf: 3 pages]"
    scan = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": fake.host_file("s.png", png_bytes(), "image/png")},
    ]
    assert chat(client, scan).json()["choices"][0]["message"]["content"] == "echo: look"
    for bad in (
        [{"type": "document_url", "document_url": "https://example.com/x.pdf"}],
        [{"type": "image_url", "image_url": {"url": f"{fake.root_url}/hosted/gone.png"}}],
        [{"type": "document_url", "document_url": data_uri(b"junk", "application/pdf")}],
    ):
        r = chat(client, bad)
        assert r.status_code == 400 and r.json()["object"] == "error"
    client.delete(f"/files/{file_id}")
    assert chat(client, content).status_code == 400  # the signed URL now points at nothing


def test_transcription(fake, client):
    r = transcribe(client, wav_bytes(2.5), language="fr", temperature="0.2")
    body = r.json()
    assert_spec(body, "TranscriptionResponse")
    assert body["text"] == "Hello and welcome. This is a test recording. The weather is fine today."
    assert (body["language"], body["segments"], body["model"]) == ("fr", [], "voxtral-mini-2512")
    assert body["usage"]["prompt_audio_seconds"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    rec = fake.requests[-1]
    assert rec.body is None and rec.form_value("language") == "fr" and rec.files["file"].filename == "speech.wav"
    body = transcribe(
        client, wav_bytes(1.5), timestamp_granularities=["segment"], diarize="true", context_bias=["Mistral", "Voxtral"]
    ).json()
    assert_spec(body, "TranscriptionResponse")
    assert [(s["text"], s["start"], s["end"], s["speaker_id"]) for s in body["segments"]] == [
        ("Hello and welcome.", 0.0, 1.0, "speaker_1"),
        ("This is a test recording.", 1.0, 1.5, "speaker_2"),
    ]
    assert fake.requests[-1].form["context_bias"] == ["Mistral", "Voxtral"]
    words = transcribe(client, wav_bytes(1.0), timestamp_granularities="word").json()["segments"]
    assert [(w["text"], w["start"], w["end"]) for w in words] == [
        ("Hello", 0.0, 0.333),
        ("and", 0.333, 0.667),
        ("welcome.", 0.667, 1.0),
    ]
    assert "speaker_id" not in words[0]
    file_id = upload(client, "speech.wav", wav_bytes(1.0), "audio").json()["id"]
    form = {"model": "voxtral-mini-latest"}  # without a file part the form goes urlencoded, as the SDK sends it
    by_id = client.post("/audio/transcriptions", data={**form, "file_id": file_id}).json()
    by_url = client.post(
        "/audio/transcriptions", data={**form, "file_url": fake.host_file("a.wav", wav_bytes(1.0))}
    ).json()
    assert by_id["text"] == by_url["text"] == "Hello and welcome."
    mp3 = transcribe(client, b"ID3" + bytes(47997)).json()  # compressed audio: duration estimated from the size
    assert mp3["usage"]["prompt_audio_seconds"] == 3


def test_transcription_stream(client):
    with client.stream(
        "POST",
        "/audio/transcriptions",
        files={"file": ("a.wav", wav_bytes(2.5))},
        data={"model": "voxtral-mini-latest", "stream": "true", "timestamp_granularities": "segment"},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)  # every data line is JSON: no [DONE] at the end
    assert [name for name, _ in events] == [
        "transcription.language",
        *["transcription.text.delta", "transcription.segment"] * 3,
        "transcription.done",
    ]
    for name, data in events:
        assert data["type"] == name
        assert_spec({"event": name, "data": data}, "TranscriptionStreamEvents")
    done = events[-1][1]
    assert "".join(d["text"] for n, d in events if n == "transcription.text.delta") == done["text"]
    assert [d["end"] for n, d in events if n == "transcription.segment"] == [1.0, 2.0, 2.5]
    assert events[0][1]["audio_language"] == done["language"] == "en" and done["usage"]["prompt_audio_seconds"] == 3
    with client.stream(
        "POST",
        "/audio/transcriptions",
        files={"file": ("a.wav", wav_bytes(0.5))},
        data={"model": "voxtral-mini-latest", "stream": "true", "timestamp_granularities": "word"},
    ) as r:
        events = sse_events(r)
    assert [n for n, _ in events[:2]] == ["transcription.language", "transcription.text.delta"]
    words = [(d["text"], d["start"], d["end"]) for n, d in events if n == "transcription.segment"]
    assert words == [("Hello", 0.0, 0.167), ("and", 0.167, 0.333), ("welcome.", 0.333, 0.5)]
    assert [(s["text"], s["start"], s["end"]) for s in events[-1][1]["segments"]] == words


def test_transcription_errors(client):
    r = transcribe(client, REPORT)
    assert r.status_code == 400 and "could not be decoded as audio" in r.json()["message"]
    r = client.post(
        "/audio/transcriptions", files={"file": ("a.wav", wav_bytes(0.5))}, data={"model": "mistral-large-latest"}
    )
    assert r.status_code == 404 and r.json()["type"] == "model_not_found"
    form = {"model": "voxtral-mini-latest"}
    unreachable = client.post("/audio/transcriptions", data={**form, "file_url": "https://example.com/a.wav"})
    assert unreachable.status_code == 400
    assert client.post("/audio/transcriptions", data={**form, "file_id": NO_FILE}).status_code == 404
    unprocessable = [
        client.post("/audio/transcriptions", data=form),  # no audio
        client.post("/audio/transcriptions", files={"file": ("a.wav", wav_bytes(0.5))}, data={}),  # no model
        transcribe(client, wav_bytes(0.5), file_url="https://example.com/a.wav"),  # two sources
        transcribe(client, wav_bytes(0.5), language="english"),
        transcribe(client, wav_bytes(0.5), stream="maybe"),
        transcribe(client, wav_bytes(0.5), timestamp_granularities="char"),
        transcribe(client, wav_bytes(0.5), temperature="hot"),
    ]
    for r in unprocessable:
        assert r.status_code == 422, r.text
        assert_spec(r.json(), "HTTPValidationError")


def test_speech(client):
    r = client.post(
        "/audio/speech", json={"input": "Hello there, how are you", "voice_id": "oliver", "response_format": "wav"}
    )
    assert_spec(r.json(), SPEECH_JSON)
    wav = base64.b64decode(r.json()["audio_data"])
    assert (audio_info(wav).format, audio_info(wav).seconds) == ("wav", 2.0)  # 0.4 s a word
    default = base64.b64decode(client.post("/audio/speech", json={"input": "Hi"}).json()["audio_data"])
    assert audio_info(default).format == "mp3"  # mp3 unless asked otherwise

    def speak(fmt: str) -> bytes:
        return base64.b64decode(
            client.post("/audio/speech", json={"input": "Hi", "response_format": fmt}).json()["audio_data"]
        )

    assert len(speak("pcm")) == 8000  # 0.5 s at least, 8 kHz 16-bit mono
    assert speak("flac")[:4] == b"fLaC" and speak("opus")[:4] == b"OggS"
    body = {
        "input": "Hello there, how are you",
        "response_format": "wav",
        "model": "voxtral-mini-tts-latest",
        "stream": True,
    }
    with client.stream("POST", "/audio/speech", json=body) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        events = sse_events(s)
    assert [n for n, _ in events] == ["speech.audio.delta"] * 8 + ["speech.audio.done"]
    for name, data in events:
        assert data["type"] == name
        assert_spec({"event": name, "data": data}, SPEECH_SSE)
    assert b"".join(base64.b64decode(d["audio_data"]) for n, d in events[:-1]) == wav
    usage = events[-1][1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_speech_errors_and_voices(client):
    assert client.post("/audio/speech", json={"voice_id": "oliver"}).status_code == 422
    assert client.post("/audio/speech", json={"input": "x", "response_format": "aac"}).status_code == 422
    assert client.post("/audio/speech", json={"input": "   "}).status_code == 400
    r = client.post("/audio/speech", json={"input": "x", "voice_id": "nobody"})
    assert r.status_code == 404 and "nobody" in r.json()["message"]
    r = client.post("/audio/speech", json={"input": "x", "model": "mistral-large-latest"})
    assert r.status_code == 404 and r.json()["type"] == "model_not_found"
    voices = client.get("/audio/voices").json()
    assert_spec(voices, "VoiceListResponse")
    assert pick(voices, "total", "page", "page_size", "total_pages") == (4, 0, 10, 1) and len(voices["items"]) == 4
    presets = client.get("/audio/voices", params={"type": "preset", "limit": 2, "offset": 2}).json()
    assert [v["name"] for v in presets["items"]] == ["Lucia"]
    assert (presets["total"], presets["page"], presets["total_pages"]) == (3, 1, 2)
    assert [v["name"] for v in client.get("/audio/voices", params={"type": "custom"}).json()["items"]] == ["My Clone"]
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"type": "robot"}):
        assert client.get("/audio/voices", params=params).status_code == 422


def chat_line(custom_id: str, text: str) -> dict:
    return {"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": text}], "max_tokens": 10}}


def jsonl(lines: list) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def test_batch_file_job_lifecycle(fake, client):
    fake.batch_fail_ids = {"boom"}
    lines = [
        chat_line("0", "first"),
        chat_line("1", "second"),
        {"custom_id": "bad", "body": {"messages": []}},
        chat_line("boom", "x"),
        chat_line("3", "third"),
    ]
    file_id = upload(client, "batch.jsonl", jsonl(lines) + b"\n", "batch").json()["id"]
    job = client.post(
        "/batch/jobs",
        json={
            "input_files": [file_id],
            "endpoint": "/v1/chat/completions",
            "model": "mistral-small-latest",
            "metadata": {"job": "t"},
        },
    ).json()
    assert_spec(job, "BatchJob")
    assert pick(job, "status", "total_requests", "completed_requests") == ("QUEUED", 5, 0)
    assert job["output_file"] is None and job["started_at"] is None
    assert (job["input_files"], job["metadata"], job["object"], job["errors"]) == ([file_id], {"job": "t"}, "batch", [])
    running = client.get(f"/batch/jobs/{job['id']}").json()
    assert (running["status"], running["completed_requests"], running["succeeded_requests"]) == ("RUNNING", 2, 2)
    assert running["started_at"] and running["output_file"] is None
    done = client.get(f"/batch/jobs/{job['id']}").json()
    assert_spec(done, "BatchJob")
    assert pick(done, "status", "completed_requests", "succeeded_requests", "failed_requests") == ("SUCCESS", 5, 3, 2)
    assert "outputs" not in done and done["completed_at"] >= done["created_at"]
    assert client.get(f"/batch/jobs/{job['id']}").json() == done  # finished jobs stay as they are
    output = [json.loads(line) for line in client.get(f"/files/{done['output_file']}/content").text.splitlines()]
    assert [o["custom_id"] for o in output] == ["0", "1", "3"]
    assert set(output[0]) == {"id", "custom_id", "response", "error"} and output[0]["error"] is None
    assert output[0]["response"]["status_code"] == 200
    answer = output[0]["response"]["body"]
    assert answer["choices"][0]["message"]["content"] == "echo: first" and answer["model"] == "mistral-small-2512"
    errors = [json.loads(line) for line in client.get(f"/files/{done['error_file']}/content").text.splitlines()]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("bad", 400), ("boom", 500)]
    assert errors[0]["error"] == {"message": "Conversation must have at least one message", "code": "3210"}
    out_info = client.get(f"/files/{done['output_file']}").json()
    assert pick(out_info, "purpose", "sample_type", "source", "num_lines") == ("batch", "batch_result", "mistral", 3)
    assert client.get(f"/files/{done['error_file']}").json()["sample_type"] == "batch_error"
    assert [f.id for f in fake.uploads] == [file_id]  # results are not uploads
    inline = client.get(f"/batch/jobs/{job['id']}", params={"inline": "true"}).json()
    assert [o["custom_id"] for o in inline["outputs"]] == ["0", "1", "bad", "boom", "3"]


def test_batch_inline_requests_and_endpoints():
    with FakeMistral(batch_polls=0) as fake, httpx.Client(base_url=fake.base_url, headers=AUTH) as client:

        def run(endpoint: str, model: str, *bodies: dict) -> dict:
            requests = [{"custom_id": str(i), "body": body} for i, body in enumerate(bodies)]
            return client.post("/batch/jobs", json={"requests": requests, "endpoint": endpoint, "model": model}).json()

        job = run(
            "/v1/embeddings", "mistral-embed", {"input": ["alpha"]}, {"input": "beta", "model": "codestral-embed"}
        )
        assert_spec(job, "BatchJob")
        assert (job["status"], job["succeeded_requests"], job["input_files"]) == ("SUCCESS", 2, [])
        first, second = (o["response"]["body"] for o in job["outputs"])
        assert (
            first["data"]
            == client.post("/embeddings", json={"model": "mistral-embed", "input": ["alpha"]}).json()["data"]
        )
        assert len(second["data"][0]["embedding"]) == 1536  # the line's own model wins
        assert client.get(f"/batch/jobs/{job['id']}").json()["outputs"] == job["outputs"]
        fim = run("/v1/fim/completions", "codestral-latest", {"prompt": "def f(", "suffix": "):"})
        assert fim["outputs"][0]["response"]["body"]["choices"][0]["message"]["content"] == "MIDDLE(6,2)"
        pages = run("/v1/ocr", "mistral-ocr-latest", {"document": PDF_DOC})["outputs"][0]["response"]["body"]["pages"]
        assert len(pages) == 3
        refused = run(
            "/v1/chat/completions",
            "",
            {"messages": [{"role": "user", "content": "x"}]},
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            "not an object",
        )
        assert (refused["failed_requests"], refused["output_file"]) == (3, None)
        assert [o["error"]["message"] for o in refused["outputs"]] == [
            "No model: give one for the job or in the request body",
            "Streaming is not supported in batch requests",
            "Invalid batch request: each line must be a JSON object with a 'body' object",
        ]
        moderation = run("/v1/moderations", "mistral-moderation-latest", {"input": "x"})
        assert moderation["failed_requests"] == 1
        assert "does not run /v1/moderations" in moderation["outputs"][0]["error"]["message"]


def test_batch_cancel_failure_and_timeout(fake, client):
    requests = [chat_line(str(i), f"q{i}") for i in range(4)]

    def create(**extra) -> str:
        body = {"requests": requests, "endpoint": "/v1/chat/completions", "model": "mistral-small-latest", **extra}
        return client.post("/batch/jobs", json=body).json()["id"]

    def poll(job_id: str) -> dict:
        return client.get(f"/batch/jobs/{job_id}").json()

    job_id = create()
    cancelling = client.post(f"/batch/jobs/{job_id}/cancel").json()
    assert_spec(cancelling, "BatchJob")
    assert cancelling["status"] == "CANCELLATION_REQUESTED"
    cancelled = poll(job_id)
    assert (cancelled["status"], cancelled["completed_requests"], cancelled["output_file"]) == ("CANCELLED", 0, None)
    assert cancelled["completed_at"] and cancelled["outputs"] == []
    r = client.post(f"/batch/jobs/{job_id}/cancel")
    assert r.status_code == 400 and "CANCELLED" in r.json()["message"]

    fake.batch_final_status = "FAILED"
    job_id = create()
    assert poll(job_id)["status"] == "RUNNING"
    failed = poll(job_id)
    assert (failed["status"], failed["completed_requests"], failed["errors"][0]["count"]) == ("FAILED", 2, 1)
    assert len(client.get(f"/files/{failed['output_file']}/content").text.splitlines()) == 2  # what ran before

    fake.batch_final_status = "TIMEOUT_EXCEEDED"
    job_id = create()
    poll(job_id)
    timed_out = poll(job_id)
    assert pick(timed_out, "status", "completed_requests") == ("TIMEOUT_EXCEEDED", 2)
    assert timed_out["errors"] == [{"message": "Timeout of 24 hours exceeded", "count": 2}]

    fake.batch_final_status = "SUCCESS"
    job_id = create(timeout_hours=1)
    start = time.time()
    fake.clock = lambda: start + 3600 + 5
    late = poll(job_id)  # an hour later on the first poll: nothing ran
    assert (late["status"], late["completed_requests"], late["output_file"]) == ("TIMEOUT_EXCEEDED", 0, None)
    assert late["errors"] == [{"message": "Timeout of 1 hours exceeded", "count": 4}]


def test_batch_list_and_delete(fake, client):
    def create(model: str, **extra) -> str:
        body = {"requests": [chat_line("0", "x")], "endpoint": "/v1/chat/completions", "model": model, **extra}
        return client.post("/batch/jobs", json=body).json()["id"]

    first, second, third = (
        create("mistral-small-latest", metadata={"k": "v"}),
        create("mistral-large-latest"),
        create("mistral-small-latest"),
    )
    for _ in range(2):
        client.get(f"/batch/jobs/{third}")
    listing = client.get("/batch/jobs").json()
    assert_spec(listing, "ListBatchJobsResponse")
    assert [j["id"] for j in listing["data"]] == [third, second, first] and listing["total"] == 3  # newest first

    def ids(**params) -> list[str]:
        return [j["id"] for j in client.get("/batch/jobs", params=params).json()["data"]]

    assert ids(order_by="created") == [first, second, third]
    assert ids(status="SUCCESS") == [third] and ids(status=["QUEUED", "RUNNING"]) == [second, first]
    assert ids(model="mistral-small-latest") == [third, first] and ids(metadata=json.dumps({"k": "v"})) == [first]
    assert ids(created_after="2999-01-01T00:00:00Z") == [] and ids(page=1, page_size=2) == [first]
    bad_filters = ({"order_by": "newest"}, {"metadata": "{"}, {"metadata": "[1]"}, {"created_after": "x"}, {"page": -1})
    for params in bad_filters:
        assert client.get("/batch/jobs", params=params).status_code == 422
    deleted = client.delete(f"/batch/jobs/{first}").json()
    assert_spec(deleted, "DeleteBatchJobResponse")
    assert deleted == {"id": first, "object": "batch", "deleted": True}
    for r in (
        client.get(f"/batch/jobs/{first}"),
        client.delete(f"/batch/jobs/{first}"),
        client.post(f"/batch/jobs/{first}/cancel"),
    ):
        assert r.status_code == 404
    assert client.get("/batch/jobs/123").status_code == 422


def test_batch_create_errors(fake, client):
    def create(**body) -> httpx.Response:
        return client.post("/batch/jobs", json={"endpoint": "/v1/chat/completions", **body})

    requests = [chat_line("0", "x")]
    for r in (
        create(endpoint="/v1/images", requests=requests),
        create(requests=requests, timeout_hours=0),
        create(requests=requests, metadata=["x"]),
        create(input_files="abc"),
    ):
        assert r.status_code == 422
    assert create(requests=requests, input_files=[NO_FILE]).status_code == 400  # both
    assert create().status_code == 400  # neither
    assert create(input_files=[NO_FILE]).status_code == 404
    file_id = upload(client, "b.jsonl", b'not json\n{"custom_id": "x"}\n[1]\n', "batch").json()["id"]
    job = create(input_files=[file_id], model="mistral-small-latest").json()
    assert job["total_requests"] == 3
    fake.batch_polls = 1
    done = client.get(f"/batch/jobs/{job['id']}").json()
    assert (done["status"], done["failed_requests"], done["output_file"]) == ("SUCCESS", 3, None)
    errors = client.get(f"/files/{done['error_file']}/content").text.splitlines()
    assert [json.loads(e)["custom_id"] for e in errors] == [None, "x", None]


def test_schema_example():
    schema = {
        "type": "object", "required": ["a", "b", "c", "d", "e", "f", "g"], "$defs": {"Kind": {"enum": ["x", "y"]}},
        "properties": {
            "a": {"type": "string"}, "b": {"type": "integer", "minimum": 3}, "c": {"type": "number"},
            "d": {"type": "boolean"}, "e": {"$ref": "#/$defs/Kind"},
            "f": {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]},
            "g": {"type": "array", "items": {"type": "object", "properties": {"h": {"const": 5}}}},
            "skipped": {"type": "string"},
        },
    }  # fmt: skip
    assert schema_example(schema, text="T") == {
        "a": "T",
        "b": 3,
        "c": 1.0,
        "d": True,
        "e": "x",
        "f": "2026-01-01",
        "g": [{"h": 5}],
    }
    assert schema_example({"type": ["null", "integer"]}) == 1 and schema_example({"type": "null"}) is None


@pytest.mark.skipif(not OPENAPI.exists(), reason="../shared/conformance not available")
def test_validate_received_checks_forms_batch_files_and_jobs():
    from conftest import validate_received

    def received(act) -> FakeMistral:
        with FakeMistral(batch_polls=0) as fake, httpx.Client(base_url=fake.base_url, headers=AUTH) as client:
            act(client)
        return fake

    def good(client: httpx.Client) -> None:
        file_id = upload(client, "in.jsonl", jsonl([chat_line("0", "x")]), "batch").json()["id"]
        client.post(
            "/batch/jobs",
            json={"input_files": [file_id], "endpoint": "/v1/chat/completions", "model": "mistral-small-latest"},
        )
        transcribe(
            client,
            wav_bytes(0.5),
            language="en",
            temperature="0.2",
            diarize="true",
            timestamp_granularities=["segment", "word"],
            context_bias="Mistral",
        )
        transcribe(client, wav_bytes(0.5), stream="true")  # checked against AudioTranscriptionRequestStream
        transcribe(client, wav_bytes(0.5), stream="true", **{"timestamp_granularities[]": "word",
                                                                "context_bias[]": ["Mistral", "Voxtral"]})
        client.post(
            "/audio/transcriptions", data={"model": "voxtral-mini-latest", "file_url": "https://example.com/a.wav"}
        )
        ocr(client, PDF_DOC, pages="0-1")
        client.post("/audio/speech", json={"input": "hi", "response_format": "wav"})
        upload(client, "report.pdf", REPORT, expiry="24")

    validate_received(received(good))
    inline = {
        "requests": [{"custom_id": "0", "body": {"messages": "hi"}}],
        "endpoint": "/v1/chat/completions",
        "model": "m",
    }
    bad = {
        "multipart form to /v1/audio/transcriptions does not match": lambda c: transcribe(
            c, wav_bytes(0.5), language="english"
        ),
        "multipart form to /v1/files does not match": lambda c: upload(c, "a.txt", b"x", "images"),
        "line 2 of batch file in.jsonl is not JSON": lambda c: upload(c, "in.jsonl", b'{"body": {}}\nnope\n', "batch"),
        "does not match BatchRequest": lambda c: upload(c, "in.jsonl", b'{"custom_id": "0"}\n', "batch"),
        "does not match OCRRequest": lambda c: ocr(c, PDF_DOC, colour=True),
        "does not match ChatCompletionRequest": lambda c: c.post("/batch/jobs", json=inline),
    }
    for message, act in bad.items():
        with pytest.raises(pytest.fail.Exception, match=re.escape(message)):
            validate_received(received(act))
    with pytest.raises(pytest.fail.Exception, match=r"at /context_bias/0: 'New York' does not match"):
        validate_received(received(lambda c: transcribe(c, wav_bytes(0.5), **{"context_bias[]": ["New York"]})))


def test_validate_received_is_a_no_op_without_the_spec(monkeypatch, tmp_path):
    import conftest

    monkeypatch.setattr(conftest, "OPENAPI", tmp_path / "absent.json")
    with FakeMistral() as fake, httpx.Client(base_url=fake.base_url, headers=AUTH) as client:
        transcribe(client, wav_bytes(0.5), language="english")
        upload(client, "in.jsonl", b"not json\n", "batch")
        ocr(client, PDF_DOC, colour=True)
    conftest.validate_received(fake)  # nothing to check against: no failure
