"""Batch results (batch_results.py): answers turned into llm responses as a live reply is, ids that make logging
idempotent, request details read by custom_id, and vectors checked before they are stored."""

from __future__ import annotations

import hashlib
import json

import llm
import pytest
import sqlite_utils
from ulid import ULID

from _llm_mistral_suite.batch import BatchResult, requests_path
from _llm_mistral_suite.batch_results import ChatResults, EmbeddingResults, RequestDetails, batch_ulid
from _llm_mistral_suite.errors import MistralSuiteError
from api_mock import PNG

JOB = {"id": "0b5e0c2a-6f1d-4c8e-9a73-3d2b1f0e9c44", "status": "SUCCESS", "total_requests": 2, "completed_at": 1_800_000_000}


def completion(content, finish="stop", model="mistral-small-2512", created=1_800_000_123):
    return {"id": "cmpl-1", "object": "chat.completion", "model": model, "created": created,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 4}}}


def test_batch_ulids_are_ulids_stable_and_in_input_order():
    digest = hashlib.blake2b(b"job\x00t1", digest_size=6).digest()
    expected = str(ULID(int(1_800_000_000.5 * 1000).to_bytes(6, "big") + (7).to_bytes(4, "big") + digest)).lower()
    assert batch_ulid(1_800_000_000.5, 7, "job", "t1") == expected
    assert batch_ulid(1_800_000_000.5, 7, "job", "t1") == expected  # the same result, the same id
    ids = [batch_ulid(1_800_000_000, position, "job", f"x{position}") for position in range(300)]
    assert ids == sorted(ids) and len(set(ids)) == 300
    assert batch_ulid(1_800_000_001, 0, "job", "a") > batch_ulid(1_800_000_000, 299, "job", "b")


def test_request_details_are_read_by_custom_id_with_their_position(user_dir):
    path = requests_path(JOB["id"])
    path.parent.mkdir(parents=True)
    rows = [{"custom_id": "é-1", "prompt": "un"}, {"custom_id": "2", "prompt": "deux"}]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    details = RequestDetails(path)
    assert details.get("2") == {"custom_id": "2", "prompt": "deux", "position": 1}
    assert details.get("é-1")["position"] == 0 and details.get("3") is None and details.get(None) is None
    details.close()
    with pytest.raises(MistralSuiteError, match="The details of this job's requests are missing"):
        RequestDetails(path.with_name("nope.jsonl"))


def test_an_answer_becomes_the_response_a_live_reply_would_be(user_dir):
    results = ChatResults(JOB, {"model": "mistral/magistral-small-latest", "api_model": "magistral-small-latest"}, None)
    details = {"prompt": "17 x 19?", "system": "Be brief", "options": {"reasoning_effort": "high"}, "attachments": [],
               "position": 3}
    content = [{"type": "thinking", "thinking": [{"type": "text", "text": "17*19 = 323"}], "signature": "sig"},
               {"type": "text", "text": "323"}]
    turn = results.turn("t1", details, completion(content, model="magistral-small-2509"))
    response = turn.response
    assert response.text() == "323" and response.prompt.prompt == "17 x 19?" and response.prompt.system == "Be brief"
    assert response.prompt.options.reasoning_effort == "high"
    [message] = response._messages_now()
    assert [part.__class__.__name__ for part in message.parts] == ["ReasoningPart", "TextPart"]
    assert message.parts[0].provider_metadata == {"mistral": {"signature": "sig"}}
    assert (response.input_tokens, response.output_tokens, response.token_details) == (12, 3, {"cached_tokens": 4})
    assert response.resolved_model == "magistral-small-2509"
    assert response.response_json == {"id": "cmpl-1", "model": "magistral-small-2509", "finish_reason": "stop",
                                      "usage": completion("")["usage"], "batch_job": JOB["id"], "custom_id": "t1"}
    assert response.datetime_utc() == "2027-01-15T08:02:03+00:00" and response.duration_ms() == 0
    assert turn.turn_id == response.id == batch_ulid(1_800_000_123, 3, JOB["id"], "t1", "turn")
    assert turn.thread_id == batch_ulid(1_800_000_123, 3, JOB["id"], "t1", "thread")
    with pytest.raises(MistralSuiteError, match="ended before it was finished"):
        results.turn("t2", details, completion("32", finish=None))


def test_an_attachment_kept_without_its_hash_and_gone_since_fails_only_its_row(user_dir, tmp_path):
    image = tmp_path / "img.png"
    path = requests_path(JOB["id"])
    path.parent.mkdir(parents=True)
    rows = [{"custom_id": "a", "prompt": "Describe", "system": None, "options": {},  # as details were kept before
             "attachments": [{"type": "image/png", "path": str(image), "url": None}]},
            {"custom_id": "b", "prompt": "Hi", "system": None, "options": {}, "attachments": []}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    db = sqlite_utils.Database(tmp_path / "logs.db")
    results = ChatResults(JOB, {"model": "mistral-medium", "api_model": "mistral-medium-latest"}, db)
    output = [BatchResult("line 1", "a", completion("A pixel"), None), BatchResult("line 2", "b", completion("Hello"), None)]
    summary = results.ingest_files([("output", iter(output))], None)
    assert summary.written == 1 and summary.failed == [("a", (
        f"its attachment {image} cannot be read (No such file or directory), so its answer was not logged; "
        "put the file back and run `results` again."))]
    assert [row[0] for row in db.execute("select response from turn_search")] == ["Hello"]
    image.write_bytes(PNG)
    summary = results.ingest_files([("output", iter(output))], None)
    assert (summary.written, summary.already, summary.failed) == (1, 1, [])


def test_vectors_are_checked_before_they_are_stored(user_dir):
    results = EmbeddingResults(JOB, {"model": "mistral/mistral-embed", "collection": "c"}, None)
    body = {"data": [{"index": 1, "embedding": [0.5] * 1024}, {"index": 0, "embedding": [0.25] * 1024}]}
    assert results.vectors(body, 2) == ([[0.25] * 1024, [0.5] * 1024], None)
    assert results.vectors(body, 3)[1] == "the answer holds 2 embeddings for 3 inputs"
    assert results.vectors({"data": [{"embedding": [1.0] * 12}]}, 1)[1] == (
        "the answer holds vectors that are not 1024-dimension ones (mistral/mistral-embed)")
    assert results.vectors({"object": "list"}, 1)[1] == "the answer holds no embeddings"


def test_vectors_come_as_base64_float32_or_as_json_floats(user_dir):
    """Lines ask for base64 since this release; jobs submitted before asked for floats: both are read."""
    import base64
    import struct

    results = EmbeddingResults(JOB, {"model": "mistral/mistral-embed", "collection": "c"}, None)
    packed = base64.b64encode(struct.pack("<1024f", *([0.25] * 1024))).decode()
    vectors, error = results.vectors({"data": [{"embedding": packed}, {"embedding": [0.5] * 1024}]}, 2)
    assert error is None and vectors == [llm.encode([0.25] * 1024), [0.5] * 1024]  # base64: stored as it came
    short = base64.b64encode(struct.pack("<12f", *([0.25] * 12))).decode()
    assert results.vectors({"data": [{"embedding": short}]}, 1)[1] == (
        "the answer holds vectors that are not 1024-dimension ones (mistral/mistral-embed)")
    assert results.vectors({"data": [{"embedding": "not base64!"}]}, 1)[1] == (
        "the answer holds vectors that are not 1024-dimension ones (mistral/mistral-embed)")


def test_results_need_a_model_llm_still_knows():
    with pytest.raises(MistralSuiteError, match="submitted for mistral/gone, which llm no longer knows"):
        ChatResults(JOB, {"model": "mistral/gone"}, None)
    with pytest.raises(MistralSuiteError, match="which llm no longer knows"):
        EmbeddingResults(JOB, {"model": "gone-embed", "collection": "c"}, None)
    assert ChatResults(JOB, {"model": "mistral-small"}, None).model.model_id == "mistral/mistral-small-latest"
