"""Mistral's Batch API through batch.py: jobs created, read, listed, cancelled and waited for; result lines read;
job ids resolved from the jobs remembered here."""

from __future__ import annotations

import io
import json

import pytest

from _llm_mistral_suite.batch import (
    cancel_job,
    create_job,
    ended_error,
    get_job,
    list_jobs,
    read_results,
    remember_job,
    remembered_jobs,
    resolve_job_id,
    submit_files,
    wait_for_job,
)
from _llm_mistral_suite.errors import MistralSuiteError
from conftest import SENTINEL_KEY
from fake_mistral import FakeMistral

CHAT = "/v1/chat/completions"


@pytest.fixture
def api(fake, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    return fake


def request_file(tmp_path, *prompts: str):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps({"custom_id": str(n), "body": {"model": "mistral-small-latest", "messages": [
        {"role": "user", "content": text}]}}) + "\n" for n, text in enumerate(prompts, 1)))
    return path


def test_submit_wait_and_read_the_results(api, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BATCH_POLL", "40")
    api.batch_polls = 4
    job = submit_files(SENTINEL_KEY, [request_file(tmp_path, "one", "two")], CHAT, "mistral-small-latest",
                       {"source": "llm-mistral-suite"}, 2)
    assert job["status"] == "QUEUED" and job["total_requests"] == 2
    [upload] = api.uploads
    assert (upload.purpose, upload.filename) == ("batch", "llm-batch-1-of-1.jsonl")
    created = api.batch_jobs[job["id"]]
    assert (created.model, created.timeout_hours, created.metadata) == ("mistral-small-latest", 2, {"source": "llm-mistral-suite"})
    seen, slept = [], []
    done = wait_for_job(SENTINEL_KEY, job["id"], lambda j: seen.append(j["status"]), slept.append)
    assert seen == ["RUNNING", "RUNNING", "RUNNING", "SUCCESS"] and done["status"] == "SUCCESS"
    assert slept == [40, 60, 60]  # LLM_MISTRAL_BATCH_POLL, growing by half each time, at most a minute
    assert ended_error(done) is None
    output = api.files[done["output_file"]].data
    results = list(read_results(io.BytesIO(output), "output"))
    assert [(r.custom_id, r.error) for r in results] == [("1", None), ("2", None)]
    assert results[0].body["choices"][0]["message"]["content"] == "echo: one"


def test_a_job_that_cannot_be_created_leaves_no_upload_behind(tmp_path, monkeypatch):
    with FakeMistral() as server:  # not the `fake` fixture: this job request is invalid on purpose
        monkeypatch.setenv("LLM_MISTRAL_BASE_URL", server.base_url)
        with pytest.raises(MistralSuiteError, match="endpoint"):
            submit_files(SENTINEL_KEY, [request_file(tmp_path, "x")], "/v1/nowhere", "m", {}, None)
        assert server.upload_count == 1 and server.uploads == []


def test_unknown_jobs_and_cancelling(api, tmp_path):
    with pytest.raises(MistralSuiteError, match="has no batch job 0a0a0a0a-0000-4000-8000-000000000000"):
        get_job(SENTINEL_KEY, "0a0a0a0a-0000-4000-8000-000000000000")
    with pytest.raises(MistralSuiteError, match="has no batch job"):
        cancel_job(SENTINEL_KEY, "0a0a0a0a-0000-4000-8000-000000000000")
    job = submit_files(SENTINEL_KEY, [request_file(tmp_path, "x")], CHAT, "mistral-small-latest", {}, None)
    assert cancel_job(SENTINEL_KEY, job["id"])["status"] == "CANCELLATION_REQUESTED"
    assert get_job(SENTINEL_KEY, job["id"])["status"] == "CANCELLED"
    with pytest.raises(MistralSuiteError, match="already CANCELLED"):
        cancel_job(SENTINEL_KEY, job["id"])
    uploaded = api.uploads[0].id
    assert create_job(SENTINEL_KEY, [uploaded], CHAT, "mistral-small-latest", {}, None)["input_files"] == [uploaded]


def test_listing_pages_through_the_newest_jobs(api, tmp_path):
    api.clock = iter(range(1_800_000_000, 1_800_001_000, 10)).__next__
    ids = [submit_files(SENTINEL_KEY, [request_file(tmp_path, f"p{n}")], CHAT, "mistral-small-latest", {}, None)["id"]
           for n in range(5)]
    assert [job["id"] for job in list_jobs(SENTINEL_KEY, 3)] == ids[::-1][:3]
    assert [job["id"] for job in list_jobs(SENTINEL_KEY, 50)] == ids[::-1]
    assert list_jobs(SENTINEL_KEY, 10, ("RUNNING",)) == []


def test_result_lines_success_and_every_failure_shape():
    lines = [
        {"id": "1", "custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}, "error": None},
        {"id": "2", "custom_id": "b", "response": {"status_code": 500, "body": {"object": "error", "message": "boom"}},
         "error": {"message": "Internal server error", "code": None}},
        {"id": "3", "custom_id": 7, "response": {"status_code": 400, "body": {"message": "bad request"}}, "error": None},
        {"id": "4", "custom_id": "d", "response": None, "error": "timed out"},
        {"id": "5", "custom_id": "e", "response": {"status_code": 422, "body": {"detail": [
            {"loc": ["body", "temperature"], "msg": "too hot"}]}}},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines) + "\nnot json\n[1]\n"
    results = list(read_results(io.BytesIO(data.encode()), "error"))
    assert [(r.custom_id, r.error) for r in results] == [
        ("a", None),
        ("b", "Internal server error (HTTP 500)"),
        ("7", "bad request (HTTP 400)"),
        ("d", "timed out"),
        ("e", "temperature: too hot (HTTP 422)"),
        (None, "line 7 of the error file is not JSON: b'not json\\n'"),
        (None, "line 8 of the error file is not a JSON object"),
    ]


CHAT_JOB = {"kind": "chat", "model": "mistral/mistral-small-latest", "api_model": "mistral-small-latest"}


def test_job_ids_resolve_from_the_start_of_a_remembered_one():
    remember_job("3fa85f64-5717-4562-b3fc-2c963f66afa6", CHAT_JOB)
    remember_job("3fa9aaaa-5717-4562-b3fc-2c963f66afa6", CHAT_JOB)
    assert resolve_job_id("3FA85F64-5717-4562-B3FC-2C963F66AFA6") == "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    assert resolve_job_id("3fa8") == "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    with pytest.raises(MistralSuiteError, match="starts the ids of 2 batch jobs"):
        resolve_job_id("3fa")
    with pytest.raises(MistralSuiteError, match="is not a batch job id"):
        resolve_job_id("zzz")


@pytest.mark.parametrize("status, errors, expected", [
    ("FAILED", [{"message": "internal error", "count": 1}], "failed (FAILED) with 1 of 4 requests done (1 succeeded, 0 failed): internal error"),
    ("TIMEOUT_EXCEEDED", [], "ran out of time (TIMEOUT_EXCEEDED) with 1 of 4 requests done (1 succeeded, 0 failed)"),
    ("CANCELLED", [], "was cancelled (CANCELLED) with 1 of 4 requests done (1 succeeded, 0 failed)"),
])
def test_what_went_wrong_with_an_ended_job(status, errors, expected):
    job = {"id": "j", "status": status, "errors": errors, "total_requests": 4, "completed_requests": 1,
           "succeeded_requests": 1, "failed_requests": 0}
    assert ended_error(job) == f"Batch job j {expected}"


@pytest.mark.parametrize("damage, problem", [
    ({"items": "many"}, 'has a bad "items" ("many")'),
    ({"kind": "fish"}, 'has a bad "kind" ("fish")'),
    ({"model": None}, 'has a bad "model" (null)'),
    ({"kind": "embed"}, 'is an embedding job without its "collection" and "database"'),
])
def test_a_damaged_job_entry_is_skipped_with_a_warning(capsys, damage, problem):
    """A hand-edited or damaged entry used to end `batch list --local` (and more) in a traceback."""
    remember_job("3fa85f64-5717-4562-b3fc-2c963f66afa6", CHAT_JOB)
    remember_job("0badbad0-5717-4562-b3fc-2c963f66afa6", {**CHAT_JOB, **damage})
    assert list(remembered_jobs()) == ["3fa85f64-5717-4562-b3fc-2c963f66afa6"]
    warning = capsys.readouterr().err
    assert "skipping job '0badbad0-5717-4562-b3fc-2c963f66afa6'" in warning and problem in warning
