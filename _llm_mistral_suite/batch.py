"""Mistral's Batch API: jobs created, read, listed, cancelled and waited for, their result files read, and the jobs we remember."""

from __future__ import annotations

import datetime
import json
import re
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator, NamedTuple, Optional

import llm

from .errors import MistralSuiteError, service_message
from .files import delete_file, download_content, upload_file
from .settings import batch_poll_seconds, mistral_endpoint
from .storage import (
    OPTIONAL_COUNT, OPTIONAL_FLAG, OPTIONAL_OBJECT, OPTIONAL_TEXT, TEXT, check_updatable, entry_problem,
    read_json_object, skip_entry, update_json_object,
)
from .transport import request_json

MAX_POLL_SECONDS = 60.0

ACTIVE = ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED")
ENDED = ("SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED")
JOB_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# --- the jobs we remember --------------------------------------------------------------------------


def jobs_path() -> Path:
    """Our batch jobs, by id: kind, model, input, and where their results go."""
    return llm.user_dir() / "mistral-suite-batches.json"


def requests_dir() -> Path:
    """One JSONL file per job: what each request was (the llm prompt, or the embedded items), by custom_id."""
    return llm.user_dir() / "mistral-suite-batches"


def requests_path(job_id: str) -> Path:
    return requests_dir() / f"{job_id}.jsonl"


JOB_FIELDS = {  # the fields of a remembered job, and what each may be
    "model": TEXT, "kind": TEXT, "api_model": TEXT, "endpoint": OPTIONAL_TEXT, "requests": OPTIONAL_COUNT,
    "items": OPTIONAL_COUNT, "created": OPTIONAL_TEXT, "input": OPTIONAL_TEXT, "schema": OPTIONAL_OBJECT,
    "collection": OPTIONAL_TEXT, "database": OPTIONAL_TEXT, "store": OPTIONAL_FLAG,
}


def job_problem(record: Any) -> str | None:
    """What is wrong with one remembered job (None: nothing)."""
    problem = entry_problem(record, JOB_FIELDS)
    if problem is None and record["kind"] not in ("chat", "embed"):
        problem = f'has a bad "kind" ({json.dumps(record["kind"])[:60]})'
    if problem is None and record["kind"] == "embed" and not (record.get("collection") and record.get("database")):
        problem = 'is an embedding job without its "collection" and "database"'
    return problem


def remembered_jobs() -> dict[str, dict[str, Any]]:
    """Our jobs, by id; a damaged entry is skipped with one warning (the job itself is still at Mistral's)."""
    path = jobs_path()
    jobs = {}
    for job_id, record in read_json_object(path).items():
        problem = job_problem(record)
        if problem:
            skip_entry(path, f"job {job_id!r}", problem)
        else:
            jobs[job_id] = record
    return jobs


def remember_job(job_id: str, record: dict[str, Any]) -> None:
    update_json_object(jobs_path(), lambda jobs: jobs.__setitem__(job_id, record))  # locked: jobs of others stay


def check_jobs_file() -> None:
    """Fail now if a job could not be remembered (a damaged jobs file, a directory that cannot be written): before
    anything is uploaded, since a job created but not remembered cannot have its results brought in."""
    try:
        check_updatable(jobs_path())
    except MistralSuiteError as error:
        raise MistralSuiteError(f"{error.message} Nothing was submitted.") from None


def resolve_job_id(text: str) -> str:
    """A job id as given, or the remembered job whose id starts with ``text``."""
    text = text.strip()
    if JOB_ID.fullmatch(text):
        return text.lower()
    matches = [job_id for job_id in remembered_jobs() if job_id.startswith(text.lower())] if text else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise MistralSuiteError(f"{text!r} starts the ids of {len(matches)} batch jobs; give more of the id.")
    raise MistralSuiteError(
        f"{text!r} is not a batch job id (they look like 0a1b2c3d-...), nor the start of one submitted from here. "
        "`llm mistral batch list` shows them."
    )


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- jobs on the service ---------------------------------------------------------------------------


def create_job(key: str, input_files: list[str], endpoint: str, model: str, metadata: dict[str, str],
               timeout_hours: Optional[int]) -> dict[str, Any]:
    """``POST /v1/batch/jobs`` over uploaded files; the new job."""
    body: dict[str, Any] = {"input_files": input_files, "endpoint": endpoint, "model": model, "metadata": metadata}
    if timeout_hours is not None:
        body["timeout_hours"] = timeout_hours
    return _job(request_json(mistral_endpoint(), "POST", "/batch/jobs", key, body))


def submit_files(key: str, paths: list[Path], endpoint: str, model: str, metadata: dict[str, str],
                 timeout_hours: Optional[int]) -> dict[str, Any]:
    """Upload ``paths`` (streamed from disk) and create one job over them; the uploads are deleted again if
    the job cannot be created."""
    uploaded: list[str] = []
    try:
        for number, path in enumerate(paths, 1):
            uploaded.append(upload_file(key, path, f"llm-batch-{number}-of-{len(paths)}.jsonl", "batch").id)
        return create_job(key, uploaded, endpoint, model, metadata, timeout_hours)
    except BaseException:
        for file_id in uploaded:
            try:
                delete_file(key, file_id)
            except MistralSuiteError:
                pass
        raise


def get_job(key: str, job_id: str) -> dict[str, Any]:
    try:
        return _job(request_json(mistral_endpoint(), "GET", f"/batch/jobs/{job_id}", key))
    except MistralSuiteError as error:
        raise _unknown_job(error, job_id) from None


def cancel_job(key: str, job_id: str) -> dict[str, Any]:
    try:
        return _job(request_json(mistral_endpoint(), "POST", f"/batch/jobs/{job_id}/cancel", key))
    except MistralSuiteError as error:
        raise _unknown_job(error, job_id) from None


def list_jobs(key: str, limit: int, statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs of the account, newest first."""
    jobs: list[dict[str, Any]] = []
    page = 0
    while len(jobs) < limit:
        query = f"/batch/jobs?page={page}&page_size={min(100, limit)}&order_by=-created"
        query += "".join(f"&status={status}" for status in statuses)
        answer = request_json(mistral_endpoint(), "GET", query, key)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise MistralSuiteError("Mistral's API answered /v1/batch/jobs without a job list.")
        jobs += [_job(job) for job in data]
        if len(data) < min(100, limit) or len(jobs) >= int(answer.get("total") or 0):
            break
        page += 1
    return jobs[:limit]


def _job(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get("id"), str) or "status" not in answer:
        raise MistralSuiteError(f"Mistral's API answered with something that is not a batch job: {str(answer)[:200]}")
    return answer


def _unknown_job(error: MistralSuiteError, job_id: str) -> MistralSuiteError:
    if error.status == 404:
        return MistralSuiteError(
            f"Mistral's API has no batch job {job_id} (for this key). `llm mistral batch list` shows the jobs.",
            status=404, detail=error.detail,
        )
    return error


def progress(job: dict[str, Any]) -> str:
    """``40 of 100 requests done (38 succeeded, 2 failed)``."""
    done, total = job.get("completed_requests") or 0, job.get("total_requests") or 0
    return (f"{done:,} of {total:,} requests done ({job.get('succeeded_requests') or 0:,} succeeded, "
            f"{job.get('failed_requests') or 0:,} failed)")


def wait_for_job(key: str, job_id: str, on_poll: Callable[[dict[str, Any]], None],
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll job ``job_id`` until it has ended, waiting longer each time (``LLM_MISTRAL_BATCH_POLL`` at
    first, growing to a minute); ``on_poll`` sees every state. Ctrl-C stops the waiting, never the job."""
    delay = batch_poll_seconds()
    while True:
        job = get_job(key, job_id)
        on_poll(job)
        if job["status"] in ENDED:
            return job
        sleep(delay)
        delay = min(MAX_POLL_SECONDS, max(delay * 1.5, 0.001))


def ended_error(job: dict[str, Any]) -> Optional[str]:
    """What went wrong with an ended job that did not succeed, in a sentence; None for a success."""
    status = job["status"]
    if status == "SUCCESS":
        return None
    reasons = "; ".join(str(e.get("message")) for e in job.get("errors") or () if isinstance(e, dict) and e.get("message"))
    what = {"FAILED": "failed", "TIMEOUT_EXCEEDED": "ran out of time", "CANCELLED": "was cancelled"}.get(status, status)
    return f"Batch job {job['id']} {what} ({status}) with {progress(job)}" + (f": {reasons}" if reasons else "")


# --- result files ----------------------------------------------------------------------------------


class BatchResult(NamedTuple):
    """One line of a job's output or error file: the request's custom_id and its answer body, or its error."""

    where: str
    custom_id: Optional[str]
    body: Optional[dict[str, Any]]
    error: Optional[str]


def download_file(key: str, file_id: str, dest: IO[bytes]) -> None:
    """The content of result file ``file_id`` into ``dest`` (streamed)."""
    download_content(key, file_id, dest)
    dest.flush()
    dest.seek(0)


def read_results(lines: IO[bytes], name: str) -> Iterator[BatchResult]:
    """The results in a downloaded output or error file.

    The line format is not documented by Mistral; its SDK examples read ``response.body`` and the files hold
    ``{"id", "custom_id", "response": {"status_code", "body"}, "error"}`` a line. A line is a success when it
    has a body and neither an error nor an HTTP status of 400 or more.
    """
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"line {number} of the {name} file"
        try:
            item = json.loads(raw)
        except ValueError:
            yield BatchResult(where, None, None, f"{where} is not JSON: {raw[:200]!r}")
            continue
        if not isinstance(item, dict):
            yield BatchResult(where, None, None, f"{where} is not a JSON object")
            continue
        custom_id = item.get("custom_id")
        custom_id = None if custom_id is None else str(custom_id)
        response = item.get("response") if isinstance(item.get("response"), dict) else {}
        status, body, error = response.get("status_code"), response.get("body"), item.get("error")
        failed = bool(error) or (isinstance(status, int) and status >= 400) or not isinstance(body, dict)
        if not failed:
            yield BatchResult(where, custom_id, body, None)
            continue
        message = error.get("message") if isinstance(error, dict) else error
        if not message and body:
            message = service_message(json.dumps(body).encode())
        message = service_message(message.encode()) if isinstance(message, str) else (str(message) if message else "")
        if isinstance(status, int) and status >= 400:
            message = f"{message or 'error'} (HTTP {status})"
        yield BatchResult(where, custom_id, None, message or "the service gave no answer for this request")
