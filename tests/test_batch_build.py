"""Batch requests (batch_build.py): each prompt's line is the live request body, embedding requests are packed as the
live model packs them, and the lines are cut into files and jobs within the service's limits."""

from __future__ import annotations

import hashlib
import json

import llm
import pytest

import _llm_mistral_suite.batch_build as batch_build
from _llm_mistral_suite.batch_build import (
    ChatRequests,
    EmbedRequests,
    PromptColumns,
    RequestFiles,
    RequestLine,
    batch_chat_model,
    batch_embedding_model,
)
from _llm_mistral_suite.batch_input import InputRow
from _llm_mistral_suite.embeddings import pack_batches
from _llm_mistral_suite.errors import MistralSuiteError
from api_mock import PNG
from conftest import assert_cli_ok, bodies, validate_request
from inprocess import invoke_llm


def chat_lines(rows, model="mistral-small", system=None, options=None, schema=None, attachments=(), **columns):
    requests = ChatRequests(batch_chat_model(model), system, options or {}, schema, list(attachments),
                            PromptColumns(**columns))
    return list(requests.lines(rows)), requests


def row(value, number=1):
    return InputRow(f"line {number}", number, value)


def error(call) -> str:
    with pytest.raises(MistralSuiteError) as caught:
        call()
    return caught.value.message


# --- the very same body as a live prompt ------------------------------------------------------------


@pytest.mark.parametrize("args, line_kwargs", [
    (["-m", "mistral-small", "Three names for a pelican"], {}),
    (["-m", "mistral-large", "-s", "Answer in French", "-o", "temperature", "0.3", "-o", "max_tokens", "50",
      "-o", "stop", '["\\n\\n", "END"]', "-o", "prefix", "Voici", "Name a river"],
     {"model": "mistral-large", "system": "Answer in French",
      "options": {"temperature": "0.3", "max_tokens": "50", "stop": '["\\n\\n", "END"]', "prefix": "Voici"}}),
    (["-m", "magistral-small", "-o", "reasoning_effort", "high", "What is 17 times 19?"],
     {"model": "magistral-small", "options": {"reasoning_effort": "high"}}),
    (["-m", "mistral-small", "--schema", "name, age int", "Invent a dog"],
     {"schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                 "required": ["name", "age"]}}),
])
def test_a_batch_line_is_the_live_request_body(fake, cli_env, args, line_kwargs):
    assert_cli_ok(invoke_llm(*args[:-1], "--no-stream", args[-1], env=cli_env))
    [live] = bodies(fake)
    [line], requests = chat_lines([row(args[-1])], **line_kwargs)
    assert live.pop("prompt_cache_key")  # a live prompt's cache key is its conversation's id; a batch line has none
    assert line.body == live
    assert validate_request(line.body) in (True, False)
    assert "stream" not in line.body and requests.path == "/v1/chat/completions"
    assert requests.api_model == live["model"]


def test_attachments_go_on_the_wire_as_they_do_live(fake, cli_env, tmp_path):
    image = tmp_path / "pixel.png"
    image.write_bytes(PNG)
    assert_cli_ok(invoke_llm("-m", "mistral-medium", "--no-stream", "-a", str(image), "Describe", env=cli_env))
    [live] = bodies(fake)
    assert live.pop("prompt_cache_key")  # the live conversation's id
    attachment = batch_build.resolve_attachment(str(image), batch_chat_model("mistral-medium"), "-a")
    [line], _ = chat_lines([row("Describe")], model="mistral-medium", attachments=[attachment])
    assert line.body == live and line.details["attachments"] == [  # with the hash llm logs it by, kept for results
        {"type": "image/png", "path": str(image), "url": None, "id": hashlib.sha256(PNG).hexdigest()}]
    per_row, _ = chat_lines([row({"prompt": "Describe", "attachments": [str(image)]}),
                             row({"prompt": "Describe", "attachments": json.dumps([str(image)])}, 2)],  # a CSV cell
                            model="mistral-medium")
    assert per_row[0].body == per_row[1].body == live
    assert "cannot take image/png" in error(lambda: chat_lines([row({"prompt": "x", "attachments": str(image)})]
                                                               , model="codestral"))


def test_fill_in_the_middle_lines_use_the_fim_endpoint(fake, cli_env):
    assert_cli_ok(invoke_llm("-m", "codestral-fim", "--no-stream", "def f(", "-o", "suffix", "return 1", env=cli_env))
    [live] = bodies(fake, "/v1/fim/completions")
    [line], requests = chat_lines([row({"prompt": "def f(", "options": {"suffix": "return 1"}})], model="codestral-fim")
    assert line.body == live and requests.path == "/v1/fim/completions"
    validate_request(line.body, "FIMCompletionRequest")
    mixed = [row({"prompt": "a"}, 1), row({"prompt": "b", "options": {"model": "codestral-2508"}}, 2)]
    assert error(lambda: chat_lines(mixed, model="codestral-fim")) == (
        "Line 2: it asks for codestral-2508, but a batch job runs one model (codestral-latest).")


# --- rows, columns and their errors ------------------------------------------------------------------


def test_rows_give_ids_prompts_systems_and_options():
    lines, _ = chat_lines([
        row("plain text line", 3),
        row({"id": 7, "content": "from content", "system": "row system", "options": {"temperature": 0}}, 4),
        row({"custom_id": "c", "prompt": "from prompt", "options": '{"max_tokens": 5}'}, 5),
    ], system="default system", options={"temperature": "0.5"})
    assert [line.custom_id for line in lines] == ["3", "7", "c"]
    assert [line.body["messages"][0]["content"] for line in lines] == ["default system", "row system", "default system"]
    assert [line.body.get("temperature") for line in lines] == [0.5, 0, 0.5]
    assert lines[2].body["max_tokens"] == 5
    assert lines[1].details == {"prompt": "from content", "system": "row system", "options": {"temperature": 0.0},
                                "attachments": []}
    picked, _ = chat_lines([row({"key": "k1", "question": "q", "prompt": "not this"})], id="key", prompt="question")
    assert (picked[0].custom_id, picked[0].body["messages"][-1]["content"]) == ("k1", "q")


@pytest.mark.parametrize("rows, message", [
    ([row({"id": "a", "prompt": "x"}, 1), row({"id": "a", "prompt": "y"}, 2)],
     "Line 2: id 'a' appears twice; results are matched to prompts by id."),
    ([row({"id": "a", "text": "x"}, 4)],
     "Line 4: it has no 'prompt' or 'content' field (it has 'id', 'text'); name the prompt's column with --prompt-column."),
    ([row({"prompt": "  "}, 2)], "Line 2: its prompt ('prompt') is empty."),
    ([row({"prompt": ["x"]}, 2)], "Line 2: its prompt ('prompt') is not text."),
    ([row({"id": "", "prompt": "x"}, 2)], "Line 2: its id ('id') is empty."),
    ([row({"prompt": "x", "options": {"temperature": 9}}, 6)],
     "Line 6: bad option: temperature: Input should be less than or equal to 1.5"),
    ([row({"prompt": "x", "options": "not json"}, 2)], "Line 2: its options are not a JSON object: 'not json'"),
    ([row({"prompt": "x", "attachments": ["/no/such/file.png"]}, 2)], "Line 2: File /no/such/file.png does not exist"),
])
def test_bad_rows_are_reported_by_line(rows, message):
    assert error(lambda: chat_lines(rows)) == message


def test_reasoning_effort_on_a_model_that_does_not_reason_is_reported_by_line():
    rows = [row({"prompt": "x", "options": {"reasoning_effort": "high"}}, 3)]
    assert error(lambda: chat_lines(rows, model="mistral-large")).startswith(
        "Line 3: bad option: reasoning_effort: works only with reasoning models")
    [line], _ = chat_lines(rows, model="mistral-small")  # Small 4 reasons when asked
    assert line.body["reasoning_effort"] == "high"


def test_only_mistral_api_chat_models_run_batches():
    assert "does not run on Mistral's API" in error(lambda: batch_chat_model("llamafile"))
    assert "open-mistral-7b was retired" in error(lambda: batch_chat_model("mistral/open-mistral-7b"))
    with pytest.raises(llm.UnknownModelError):
        batch_chat_model("no-such-model")
    assert batch_embedding_model("mistral-embed").model_id == "mistral/mistral-embed"


# --- files and jobs within the limits ----------------------------------------------------------------


def line(n: int, size: int = 10) -> RequestLine:
    return RequestLine(f"line {n}", str(n), {"messages": [{"role": "user", "content": "x" * size}]}, {"prompt": "p"})


def test_lines_are_cut_into_files_and_jobs_within_the_limits(tmp_path, monkeypatch, user_dir):
    monkeypatch.setattr(batch_build, "MAX_BATCH_FILE_BYTES", 300)
    monkeypatch.setattr(batch_build, "MAX_REQUESTS_PER_JOB", 7)
    files = RequestFiles(tmp_path)
    for n in range(1, 17):
        files.add(line(n, 60))
    jobs = files.finish()
    assert [job.requests for job in jobs] == [7, 7, 2]
    for job in jobs:
        sizes = [path.stat().st_size for path in job.files]
        assert all(size <= 300 for size in sizes) and len(job.files) > 1 or job.requests == 2
    written = [json.loads(text) for job in jobs for path in job.files for text in path.read_text().splitlines()]
    assert [item["custom_id"] for item in written] == [str(n) for n in range(1, 17)]
    details = [json.loads(text) for text in jobs[0].details_path.read_text().splitlines()]
    assert details[0] == {"custom_id": "1", "prompt": "p"}
    jobs[0].keep_as("job-one")
    files.discard()
    assert sorted(p.name for p in (user_dir / "mistral-suite-batches").iterdir()) == ["job-one.jsonl"]
    with pytest.raises(MistralSuiteError, match="Line 99: its request is 0 MB; a batch file takes at most 0 MB"):
        RequestFiles(tmp_path).add(line(99, 400))


# --- embeddings ---------------------------------------------------------------------------------------


def embed_lines(rows, db=None, collection_id=None, store=False, **kwargs):
    requests = EmbedRequests(batch_embedding_model("mistral-embed"), db, collection_id, store, **kwargs)
    return list(requests.lines(rows)), requests


def test_embedding_requests_are_packed_as_the_whole_list_would_be(monkeypatch):
    monkeypatch.setattr(batch_build, "EMBED_WINDOW", 50)  # the stream is packed 50 items at a time
    texts = [("word " * (1 + (n * 37) % 900)).strip() for n in range(400)]
    lines, _ = embed_lines([row({"id": f"d{n}", "content": text}, n + 2) for n, text in enumerate(texts)])
    expected = pack_batches(texts, 512, 16384)
    assert [len(l.body["input"]) for l in lines] == [len(batch) for batch in expected]
    assert [text for l in lines for text in l.body["input"]] == texts
    assert all(l.body["model"] == "mistral-embed" for l in lines)
    for l in lines:
        validate_request(l.body, "EmbeddingRequest")
    assert lines[0].details["items"][0] == ["d0", llm.Collection.content_hash(texts[0]).hex(), None, None]


def test_embed_multi_rows_prefix_prepend_store_and_metadata():
    lines, _ = embed_lines([
        row({"id": 1, "title": "Cats", "body": "purr"}, 2),
        row({"id": "b", "content": "dogs", "metadata": {"source": "web"}}, 3),
        row("a plain line", 4),
    ], store=True, prefix="p-", prepend="doc: ")
    [request] = lines
    assert request.body["input"] == ["doc: Cats purr", "doc: dogs", "doc: a plain line"]
    assert [item[0] for item in request.details["items"]] == ["p-1", "p-b", "p-4"]
    assert request.details["items"][1][2:] == ["doc: dogs", {"source": "web"}]
    assert request.items == 3


def test_unchanged_items_are_skipped_as_embed_multi_skips_them(tmp_path):
    import sqlite_utils

    db = sqlite_utils.Database(tmp_path / "e.db")
    collection = llm.Collection("docs", db, model_id="mistral-embed")
    db["embeddings"].insert_all([
        {"collection_id": collection.id, "id": "same", "embedding": llm.encode([0.0]), "content_hash": llm.Collection.content_hash("kept")},
        {"collection_id": collection.id, "id": "changed", "embedding": llm.encode([0.0]), "content_hash": llm.Collection.content_hash("old")},
    ])
    lines, requests = embed_lines([row({"id": "same", "c": "kept"}), row({"id": "changed", "c": "new"}),
                                   row({"id": "fresh", "c": "hello"})], db=db, collection_id=collection.id)
    assert [l.body["input"] for l in lines] == [["new", "hello"]] and requests.skipped == 1


@pytest.mark.parametrize("value, message", [
    ({"id": "x"}, "Line 5: it needs an id and some content"),
    ({"id": "x", "content": "  "}, "Line 5: item 'x' is empty (or only whitespace), which cannot be embedded."),
    ({"id": "x", "content": "word " * 60000}, "Line 5: item 'x' is too long to embed"),
])
def test_bad_embedding_rows_are_reported_by_line(value, message):
    assert error(lambda: embed_lines([row(value, 5)])).startswith(message)
