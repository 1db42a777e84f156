"""`llm mistral batch` end to end against the fake Mistral server: submit, wait, results into logs.db and
embeddings.db, and every way it can go wrong. Every uploaded batch line is validated against the spec's
BatchRequest and its body against the endpoint's request schema when the fake stops.

Most runs use the CLI in-process (click's CliRunner, the same `llm` command); a few run `llm` as a subprocess:
the whole flow once, and Ctrl-C while waiting."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import _llm_mistral_suite.batch_build as batch_build
import _llm_mistral_suite.batch_results as batch_results
from api_mock import PNG
from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok, bodies
from inprocess import invoke_llm

PROMPTS = [
    {"id": "t1", "prompt": "My order never arrived", "system": "Classify the ticket"},
    {"id": "t2", "prompt": "How do I reset my password?"},
    {"id": "t3", "prompt": "Great service!", "options": {"temperature": 0}},
]


@pytest.fixture
def env(cli_env):
    return {**cli_env, "LLM_MISTRAL_BATCH_POLL": "0"}


@pytest.fixture
def cli(env):
    """``cli(*args, input=None)``: `llm` in-process against the fake."""

    def run(*args: str, input: str | None = None, **extra: str):
        return invoke_llm(*args, input=input, env={**env, **extra})

    return run


def jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def submit(cli, *args: str, input: str | None = None, command: str = "submit") -> str:
    out = assert_cli_ok(cli("mistral", "batch", command, *args, input=input))
    return out.splitlines()[0]


def logs(cli) -> list[dict]:
    return json.loads(assert_cli_ok(cli("logs", "--json", "-n", "0")))


def uploaded_lines(fake) -> list[dict]:
    return [json.loads(line) for upload in fake.uploads for line in upload.data.decode().splitlines()]


# --- prompts --------------------------------------------------------------------------------------


def test_prompts_submitted_waited_for_and_logged_like_any_prompt(fake, cli, tmp_path, user_dir):
    job_id = submit(cli, jsonl(tmp_path / "tickets.jsonl", PROMPTS), "-m", "mistral-small", "-s", "Be brief",
                    "-o", "temperature", "0.2", "--metadata", "project", "tickets")
    job = fake.batch_jobs[job_id]
    assert (job.endpoint, job.model, job.metadata) == (
        "/v1/chat/completions", "mistral-small-latest", {"source": "llm-mistral-suite", "kind": "chat", "project": "tickets"})
    lines = uploaded_lines(fake)
    assert [line["custom_id"] for line in lines] == ["t1", "t2", "t3"]
    assert lines[0]["body"] == {"model": "mistral-small-latest", "temperature": 0.2, "messages": [
        {"role": "system", "content": "Classify the ticket"}, {"role": "user", "content": "My order never arrived"}]}
    assert lines[2]["body"]["temperature"] == 0

    waited = cli("mistral", "batch", "wait", job_id[:8])
    assert_cli_ok(waited)
    assert f"Batch job {job_id} ended: SUCCESS, 3 of 3 requests done (3 succeeded, 0 failed)." in waited.stderr
    output = fake.files[fake.batch_jobs[job_id].output_file]
    output.data = b"".join(output.data.splitlines(keepends=True)[::-1])  # results come in any order

    out = assert_cli_ok(cli("mistral", "batch", "results", job_id))
    assert out == f"Logged 3 responses of batch job {job_id} in {user_dir / 'logs.db'}.\n"
    entries = {entry["prompt"]: entry for entry in logs(cli)}
    first = entries["My order never arrived"]
    assert first["response"] == "echo: My order never arrived" and first["system"] == "Classify the ticket"
    assert first["model"] == "mistral/mistral-small-latest" and first["resolved_model"] == "mistral-small-2512"
    assert first["options_json"] == {"temperature": 0.2} and entries["Great service!"]["options_json"] == {"temperature": 0.0}
    assert first["response_json"]["batch_job"] == job_id and first["response_json"]["custom_id"] == "t1"
    assert first["input_tokens"] > 0 and first["output_tokens"] > 0
    assert entries["How do I reset my password?"]["system"] == "Be brief"

    again = assert_cli_ok(cli("mistral", "batch", "results", job_id))
    assert "Logged 0 responses" in again and "(3 were there already)" in again
    assert len(logs(cli)) == 3
    printed = cli("mistral", "batch", "results", job_id, "--json", "-n")
    assert [json.loads(line) for line in assert_cli_ok(printed).splitlines()] == [
        {"custom_id": "t3", "text": "echo: Great service!"},
        {"custom_id": "t2", "text": "echo: How do I reset my password?"},
        {"custom_id": "t1", "text": "echo: My order never arrived"},
    ]
    assert [entry["prompt"] for entry in logs(cli)] == [row["prompt"] for row in PROMPTS]  # listed in input order


def test_a_batch_answer_is_logged_as_the_live_answer_is(fake, cli, tmp_path):
    args = ["-m", "mistral-large", "-s", "Answer in French", "-o", "max_tokens", "40"]
    assert_cli_ok(cli(*args, "--no-stream", "Name a river"))
    (tmp_path / "one.txt").write_text("Name a river\n")
    job_id = submit(cli, str(tmp_path / "one.txt"), *args, "--wait")
    assert_cli_ok(cli("mistral", "batch", "results", job_id))
    [batch] = [entry for entry in logs(cli) if "batch_job" in entry["response_json"]]
    [live] = [entry for entry in logs(cli) if "batch_job" not in entry["response_json"]]
    live_body = bodies(fake)[0]
    assert live_body.pop("prompt_cache_key")  # a live prompt's cache key is its conversation's id
    assert live_body == uploaded_lines(fake)[0]["body"]  # otherwise the same request on the wire
    for field in ("model", "resolved_model", "prompt", "system", "response", "options_json", "input_tokens",
                  "output_tokens", "token_details", "schema_json"):
        assert batch[field] == live[field], field
    assert batch["response_json"] == {**live["response_json"], "id": batch["response_json"]["id"],  # the reply's own id
                                      "batch_job": job_id, "custom_id": "1"}
    assert batch["conversation_id"] != live["conversation_id"]


def test_an_attachment_moved_after_submitting_is_logged_all_the_same(fake, cli, tmp_path, user_dir):
    image = tmp_path / "img.png"
    image.write_bytes(PNG)
    rows = [{"id": "a", "prompt": "Describe", "attachments": str(image)}, {"id": "b", "prompt": "Hi"}]
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", rows), "-m", "mistral-medium", "--wait")
    image.rename(tmp_path / "elsewhere.png")  # results come hours later
    result = cli("mistral", "batch", "results", job_id)
    assert "Logged 2 responses" in assert_cli_ok(result)
    entries = {entry["prompt"]: entry for entry in logs(cli)}
    assert entries["Describe"]["response"].startswith("echo: Describe") and entries["Hi"]["response"] == "echo: Hi"
    [attachment] = entries["Describe"]["attachments"]
    assert (attachment["id"], attachment["type"], attachment["path"]) == (
        hashlib.sha256(PNG).hexdigest(), "image/png", str(image))  # the content's hash, kept when submitting
    assert str(image) in assert_cli_ok(cli("logs", "-n", "2"))
    assert "Logged 0 responses" in assert_cli_ok(cli("mistral", "batch", "results", job_id))


def test_plain_text_from_stdin_with_a_schema_and_wait(fake, cli):
    result = cli("mistral", "batch", "submit", "-", "-m", "mistral-small", "--schema", "name, age int", "--wait",
                 input="Invent a dog\n\nInvent a cat\n")
    job_id = assert_cli_ok(result).splitlines()[0]
    assert "Submitted 2 prompts to mistral-small-latest" in result.stderr and "ended: SUCCESS" in result.stderr
    assert [line["custom_id"] for line in uploaded_lines(fake)] == ["1", "3"]  # line numbers
    assert uploaded_lines(fake)[0]["body"]["response_format"]["type"] == "json_schema"
    assert_cli_ok(cli("mistral", "batch", "results", job_id))
    assert {entry["schema_json"]["required"][0] for entry in logs(cli)} == {"name"}


def test_csv_with_picked_columns_and_fill_in_the_middle(fake, cli, tmp_path):
    (tmp_path / "code.csv").write_text('key,before,options\nf1,"def add(a, b):","{""suffix"": ""return c""}"\n')
    job_id = submit(cli, str(tmp_path / "code.csv"), "-m", "codestral-fim", "--id-column", "key",
                    "--prompt-column", "before", "--wait")
    assert fake.batch_jobs[job_id].endpoint == "/v1/fim/completions"
    assert uploaded_lines(fake) == [{"custom_id": "f1", "body": {"model": "codestral-latest", "prompt": "def add(a, b):",
                                                                  "suffix": "return c"}}]
    assert_cli_ok(cli("mistral", "batch", "results", job_id))
    [entry] = logs(cli)
    assert (entry["model"], entry["response"], entry["options_json"]) == (
        "mistral/codestral-fim", "MIDDLE(14,8)", {"suffix": "return c"})


def test_failed_lines_are_reported_by_id_and_the_rest_logged(fake, cli, tmp_path):
    fake.batch_fail_ids = {"t2"}
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS), "-m", "mistral-small", "--wait")
    result = cli("mistral", "batch", "results", job_id)
    assert_cli_error(result, "1 of 3 requests", job_id, "failed (listed above)")
    assert "Failed t2: Internal server error (HTTP 500)" in result.stderr
    assert "Logged 2 responses" in result.stdout
    assert sorted(entry["prompt"] for entry in logs(cli)) == ["Great service!", "My order never arrived"]
    printed = cli("mistral", "batch", "results", job_id, "--json", "-n")
    assert {"custom_id": "t2", "error": "Internal server error (HTTP 500)"} in [
        json.loads(line) for line in printed.stdout.splitlines()]


def test_a_cut_answer_in_the_output_file_is_a_failed_line_not_a_short_one(fake, cli, tmp_path):
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS[:2]), "-m", "mistral-small", "--wait")
    output = fake.files[fake.batch_jobs[job_id].output_file]
    lines = [json.loads(line) for line in output.data.splitlines()]
    lines[0]["response"]["body"]["choices"][0]["finish_reason"] = None
    lines[1]["custom_id"] = "stranger"
    output.data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    result = cli("mistral", "batch", "results", job_id)
    assert_cli_error(result, "2 of 2 requests")
    assert "Failed t1: The reply from Mistral's API (batch) ended before it was finished" in result.stderr
    assert "Failed stranger: line 2 of the output file: custom_id 'stranger' is not one of this job's requests" in result.stderr
    assert logs(cli) == []


@pytest.mark.parametrize("status, needles", [
    ("FAILED", ["failed (FAILED)", "The batch job failed: an internal error occurred"]),
    ("TIMEOUT_EXCEEDED", ["ran out of time (TIMEOUT_EXCEEDED)", "1 request was never run"]),
])
def test_a_job_that_failed_or_timed_out_is_one_error_and_its_results_are_kept(fake, cli, tmp_path, status, needles):
    fake.batch_polls = 3
    fake.batch_final_status = status
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS), "-m", "mistral-small")
    assert_cli_error(cli("mistral", "batch", "wait", job_id), *needles[:1], "batch results ID` takes in what it finished")
    waited = cli("mistral", "batch", "submit", jsonl(tmp_path / "u.jsonl", PROMPTS), "-m", "mistral-small", "--wait")
    assert_cli_error(waited, *needles[:1])
    assert len(waited.stdout.split()) == 1  # the job id was printed all the same
    result = cli("mistral", "batch", "results", job_id)
    assert_cli_error(result, *needles, "The results it has were stored")
    if status == "TIMEOUT_EXCEEDED":  # timed out on the 3rd poll: 2 of 3 requests had run
        assert sorted(entry["prompt"] for entry in logs(cli)) == ["How do I reset my password?", "My order never arrived"]


def test_results_of_a_job_still_running_is_an_error_and_writes_nothing(fake, cli, tmp_path, user_dir):
    fake.batch_polls = 5
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS), "-m", "mistral-small")
    assert_cli_error(cli("mistral", "batch", "results", job_id), "is still RUNNING", f"results {job_id} --wait")
    assert not (user_dir / "logs.db").exists() or logs(cli) == []
    assert "Logged 3 responses" in assert_cli_ok(cli("mistral", "batch", "results", job_id, "--wait"))


@pytest.mark.parametrize("kind", ["chat", "embed"])
def test_a_database_locked_by_another_process_is_one_error_and_the_run_can_be_repeated(fake, cli, tmp_path, user_dir,
                                                                                       monkeypatch, kind):
    monkeypatch.setattr(batch_results, "BUSY_SECONDS", 0.2)
    rows = jsonl(tmp_path / "t.jsonl", PROMPTS)
    if kind == "chat":
        job_id, path = submit(cli, rows, "-m", "mistral-small", "--wait"), user_dir / "logs.db"
    else:
        job_id, path = submit(cli, "--wait", "docs", rows, "-m", "mistral-embed", command="embed"), user_dir / "embeddings.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("begin exclusive")  # another process writing, for longer than we wait
    try:
        result = cli("mistral", "batch", "results", job_id)
    finally:
        holder.execute("rollback")
        holder.close()
    assert_cli_error(result, f"{path} is locked by another process", f"run `llm mistral batch results {job_id}` again")
    with sqlite3.connect(path) as db:
        assert db.execute("select name from sqlite_master where name in ('turns', 'embeddings')").fetchall() == []
    assert "3 " in assert_cli_ok(cli("mistral", "batch", "results", job_id))  # Logged 3 responses / Stored 3 vectors


@pytest.mark.parametrize("content, needle", [
    ('{"id": 1, "prompt": "fine"}\n{"id": 2, "prompt": "fine"}\n{"id": 3, "prompt": \n', "Line 3: this is not valid JSON"),
    ('{"id": 1, "prompt": "fine"}\n{"id": 1, "prompt": "again"}\n', "Line 2: id '1' appears twice"),
    ('{"id": 1, "prompt": "x", "options": {"max_tokens": "many"}}\n', "Line 1: bad option: max_tokens"),
    ('{"id": 1, "question": "x"}\n', "Line 1: it has no 'prompt' or 'content' field"),
    ("", "nothing to submit"),
])
def test_a_bad_input_is_reported_by_line_before_anything_is_uploaded(fake, cli, tmp_path, user_dir, content, needle):
    (tmp_path / "in.jsonl").write_text(content)
    assert_cli_error(cli("mistral", "batch", "submit", str(tmp_path / "in.jsonl"), "-m", "mistral-small"), needle)
    assert fake.upload_count == 0 and fake.batch_jobs == {}
    assert list(user_dir.rglob("*.jsonl")) == []  # no request details left behind


@pytest.mark.parametrize("name, content", [("in.csv", 'id,prompt\n1,ok\n2,"unterminated\n'),
                                           ("in.tsv", 'id\tprompt\n1\tok\n2\t"unterminated\n')])
def test_an_open_quote_in_csv_or_tsv_is_reported_by_line_before_anything_is_uploaded(fake, cli, tmp_path, name, content):
    (tmp_path / name).write_text(content)
    assert_cli_error(cli("mistral", "batch", "submit", str(tmp_path / name), "-m", "mistral-small"),
                     "Line 3: a quote opened in this row is never closed")
    assert fake.requests == []


@pytest.mark.parametrize("args, needles", [
    (["-m", "no-such-model"], ["Error: Unknown model: no-such-model. `llm mistral models` lists"]),  # no quotes
    (["-m", "mistral/open-mixtral-8x7b"], ["open-mixtral-8x7b was retired", "llm mistral local download mixtral-8x7b"]),
    (["-m", "llamafile"], ["llamafile-server does not run on Mistral's API"]),
    (["-m", "mistral-small", "-o", "temperature", "hot"], []),
    (["-m", "mistral-large", "-o", "reasoning_effort", "high"], []),  # mistral-large does not reason
    (["-m", "mistral-small", "missing.txt"], ["Cannot read missing.txt"]),
    (["-m", "codestral-fim", "--schema", "name"], ["does not take a schema"]),
])
def test_user_errors_are_one_clear_line(fake, cli, tmp_path, args, needles):
    (tmp_path / "p.txt").write_text("hello\n")
    path = [] if args[-1].endswith(".txt") else [str(tmp_path / "p.txt")]
    result = cli("mistral", "batch", "submit", *path, *args)
    if needles:
        assert_cli_error(result, *needles)
    else:  # llm's own rendering of an invalid option: "Error: <option>", then the reason
        option = args[args.index("-o") + 1]
        assert_cli_error(result, option)
        if option == "reasoning_effort":
            assert "works only with reasoning models" in result.stderr
    assert fake.upload_count == 0


def test_an_unknown_embedding_model_is_one_clear_line(fake, cli, tmp_path):
    (tmp_path / "d.txt").write_text("hello\n")
    result = cli("mistral", "batch", "embed", "docs", str(tmp_path / "d.txt"), "-m", "nonsense")
    assert_cli_error(result, "Error: Unknown model: nonsense. `llm mistral models` lists")
    assert fake.requests == []


@pytest.mark.parametrize("command", [["submit", "-m", "mistral-small"], ["embed", "docs", "-m", "mistral-embed"]])
def test_a_damaged_jobs_file_is_an_error_before_any_request(fake, cli, tmp_path, user_dir, command):
    (user_dir / "mistral-suite-batches.json").write_text("{not json")
    (tmp_path / "p.txt").write_text("hello\n")
    result = cli("mistral", "batch", *command[:-2], str(tmp_path / "p.txt"), *command[-2:])
    assert_cli_error(result, "mistral-suite-batches.json is not valid JSON; fix or delete it. Nothing was submitted.")
    assert fake.requests == [] and list(user_dir.rglob("*.jsonl")) == []  # no job made that would be forgotten
    assert (user_dir / "mistral-suite-batches.json").read_text() == "{not json"


def test_a_bad_key_is_one_error_and_leaves_nothing_behind(fake, cli, tmp_path, user_dir):
    (tmp_path / "p.txt").write_text("hello\n")
    result = cli("mistral", "batch", "submit", str(tmp_path / "p.txt"), "-m", "mistral-small", LLM_MISTRAL_KEY="bad-key")
    assert_cli_error(result, "llm keys set mistral")
    assert fake.uploads == [] and list(user_dir.rglob("*.jsonl")) == []
    assert not (user_dir / "mistral-suite-batches.json").exists()


def test_a_result_missing_from_the_files_is_an_error(fake, cli, tmp_path):
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS), "-m", "mistral-small", "--wait")
    output = fake.files[fake.batch_jobs[job_id].output_file]
    output.data = b"".join(output.data.splitlines(keepends=True)[:2])  # the service lost one
    result = cli("mistral", "batch", "results", job_id)
    assert_cli_error(result, "1 of 3 requests", "have no result in its output or error file")
    assert "Logged 2 responses" in result.stdout


def test_results_of_a_job_not_submitted_from_here(fake, cli, tmp_path, user_dir):
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS[:1]), "-m", "mistral-small", "--wait")
    jobs = json.loads((user_dir / "mistral-suite-batches.json").read_text())
    jobs[job_id]["model"] = "mistral/gone-model"
    (user_dir / "mistral-suite-batches.json").write_text(json.dumps(jobs))
    assert_cli_error(cli("mistral", "batch", "results", job_id), "submitted for mistral/gone-model, which llm no longer knows")
    (user_dir / "mistral-suite-batches.json").write_text("{}")
    assert_cli_error(cli("mistral", "batch", "results", job_id), "was not submitted from here")
    assert_cli_error(cli("mistral", "batch", "results", "0a0a0a0a-0000-4000-8000-000000000000"), "has no batch job")


def test_logging_off_prints_the_results_instead(fake, cli, tmp_path, user_dir):
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS[:1]), "-m", "mistral-small", "--wait")
    assert_cli_ok(cli("logs", "off"))
    result = cli("mistral", "batch", "results", job_id)
    assert json.loads(assert_cli_ok(result)) == {"custom_id": "t1", "text": "echo: My order never arrived"}
    assert "Logging is off" in result.stderr


def test_inputs_past_the_limits_become_several_files_and_jobs(fake, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(batch_build, "MAX_REQUESTS_PER_JOB", 3)
    monkeypatch.setattr(batch_build, "MAX_BATCH_FILE_BYTES", 200)
    (tmp_path / "p.txt").write_text("".join(f"Prompt number {n}\n" for n in range(1, 8)))
    result = cli("mistral", "batch", "submit", str(tmp_path / "p.txt"), "-m", "mistral-small", "--wait")
    ids = assert_cli_ok(result).splitlines()
    assert len(ids) == 3 and "part 2 of 3: a job takes at most 3 requests" in result.stderr
    assert [len(fake.batch_jobs[i].input_files) for i in ids] == [3, 3, 1]  # a file of 200 bytes takes 1 request
    assert all(len(upload.data) <= 200 for upload in fake.uploads)
    for job_id in ids:
        assert_cli_ok(cli("mistral", "batch", "results", job_id))
    assert sorted(entry["prompt"] for entry in logs(cli)) == [f"Prompt number {n}" for n in range(1, 8)]


def test_list_status_and_cancel(fake, cli, tmp_path):
    fake.batch_polls = 10
    first = submit(cli, jsonl(tmp_path / "a.jsonl", PROMPTS), "-m", "mistral-small")
    second = submit(cli, jsonl(tmp_path / "b.jsonl", PROMPTS[:1]), "-m", "mistral-large")
    listing = assert_cli_ok(cli("mistral", "batch", "list"))
    assert listing.index(second) < listing.index(first) and "chat -> logs.db" in listing and "0/3" in listing
    assert [job["id"] for job in json.loads(assert_cli_ok(cli("mistral", "batch", "list", "--json")))] == [second, first]
    local = assert_cli_ok(cli("mistral", "batch", "list", "--local"))
    assert first in local and "3 items -> logs.db" in local
    status = assert_cli_ok(cli("mistral", "batch", "status", first))
    assert f"Batch job {first}: RUNNING" in status and "0 of 3 requests done" in status
    assert f"submitted from here: 3 prompts from {tmp_path / 'a.jsonl'}; results go to logs.db" in status
    assert json.loads(assert_cli_ok(cli("mistral", "batch", "status", first, "--json")))["total_requests"] == 3
    cancelled = assert_cli_ok(cli("mistral", "batch", "cancel", first[:6]))
    assert cancelled.startswith(f"Batch job {first}: CANCELLATION_REQUESTED")
    assert any(rec.method == "POST" and rec.path.endswith(f"/{first}/cancel") for rec in fake.requests)
    assert_cli_error(cli("mistral", "batch", "wait", first), "was cancelled (CANCELLED)")


# --- embeddings -----------------------------------------------------------------------------------


def embedding_rows(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("select collections.name, embeddings.id, embedding, content, content_hash, metadata "
                          "from embeddings join collections on collections.id = collection_id "
                          "order by collections.name, embeddings.id").fetchall()


def test_embeddings_stored_as_embed_multi_stores_them(fake, cli, tmp_path, user_dir):
    docs = tmp_path / "docs.csv"
    docs.write_text("id,title,body\na,Cats,Cats purr and sleep\nb,Dogs,Dogs bark at night\nc,Birds,Birds fly south\n")
    result = cli("mistral", "batch", "embed", "docs", str(docs), "-m", "mistral-embed", "--store", "--wait")
    job_id = assert_cli_ok(result).splitlines()[0]
    assert "Submitted 3 items in 1 requests to mistral-embed" in result.stderr
    assert uploaded_lines(fake) == [{"custom_id": "1", "body": {"model": "mistral-embed", "input": [
        "Cats Cats purr and sleep", "Dogs Dogs bark at night", "Birds Birds fly south"], "encoding_format": "base64"}}]
    printed = assert_cli_ok(cli("mistral", "batch", "results", job_id, "--json", "-n")).splitlines()
    live = json.loads(assert_cli_ok(cli("embed", "-m", "mistral-embed", "-c", "Cats Cats purr and sleep")))
    assert json.loads(printed[0]) == {"id": "a", "embedding": live} and len(printed) == 3
    out = assert_cli_ok(cli("mistral", "batch", "results", job_id))
    assert out == f"Stored 3 vectors of batch job {job_id} in {user_dir / 'embeddings.db'}.\n"
    assert_cli_ok(cli("embed-multi", "reference", str(docs), "-m", "mistral-embed", "--store"))
    stored = embedding_rows(user_dir / "embeddings.db")
    assert [row[1:] for row in stored[:3]] == [row[1:] for row in stored[3:]]  # docs == reference, byte for byte
    similar = [json.loads(line) for line in assert_cli_ok(cli("similar", "docs", "-c", "Dogs Dogs bark at night")).splitlines()]
    assert similar[0]["id"] == "b" and similar[0]["content"] == "Dogs Dogs bark at night"

    again = assert_cli_ok(cli("mistral", "batch", "results", job_id))
    assert "Stored 0 vectors" in again and "(3 were there already)" in again
    assert len(embedding_rows(user_dir / "embeddings.db")) == 6
    unchanged = cli("mistral", "batch", "embed", "docs", str(docs))  # the collection's model; nothing new
    assert_cli_error(unchanged, "nothing to submit", "all 3 items are in collection 'docs' already")
    docs.write_text(docs.read_text() + "d,Fish,Fish swim\n")
    added = cli("mistral", "batch", "embed", "docs", str(docs), "--wait")
    assert "3 items were skipped: the collection holds them with the same content." in added.stderr
    assert uploaded_lines(fake)[-1]["body"]["input"] == ["Fish Fish swim"]


def test_embedding_files_metadata_and_a_database_path(fake, cli, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "one.md").write_text("first note")
    (tmp_path / "notes" / "two.md").write_text("second note")
    database = tmp_path / "mine.db"
    job_id = assert_cli_ok(cli("mistral", "batch", "embed", "notes", "--files", str(tmp_path / "notes"), "*.md",
                               "-m", "codestral-embed", "-d", str(database), "--prefix", "n/", "--wait")).splitlines()[0]
    assert uploaded_lines(fake)[0]["body"] == {"model": "codestral-embed", "input": ["first note", "second note"],
                                               "output_dimension": 1536, "encoding_format": "base64"}
    assert_cli_ok(cli("mistral", "batch", "results", job_id))
    rows = embedding_rows(database)
    assert [(row[1], row[3], len(row[2])) for row in rows] == [("n/one.md", None, 1536 * 4), ("n/two.md", None, 1536 * 4)]
    meta = tmp_path / "meta.jsonl"
    jsonl(meta, [{"id": "m1", "content": "tagged", "metadata": {"source": "web"}}])
    job_id = assert_cli_ok(cli("mistral", "batch", "embed", "notes", str(meta), "-d", str(database), "--wait")).splitlines()[0]
    assert_cli_ok(cli("mistral", "batch", "results", job_id))
    assert [row[5] for row in embedding_rows(database) if row[1] == "m1"] == ['{"source": "web"}']
    assert_cli_error(cli("mistral", "batch", "embed", "notes", str(meta), "-d", str(database), "-m", "mistral-embed"),
                     "holds mistral/codestral-embed-1536 embeddings")


def test_a_failed_embedding_request_names_its_items(fake, cli, tmp_path):
    fake.max_inputs = 2  # the fake answers requests of more than 2 inputs with a 400, as the service would
    docs = jsonl(tmp_path / "d.jsonl", [{"id": f"d{n}", "content": f"text {n}"} for n in range(3)])
    job_id = assert_cli_ok(cli("mistral", "batch", "embed", "docs", docs, "-m", "mistral-embed", "--wait")).splitlines()[0]
    result = cli("mistral", "batch", "results", job_id)
    assert_cli_error(result, "1 of 1 requests")
    assert "Failed 1: Too many inputs in request, split into more batches. (HTTP 400) (items 'd0', 'd1', 'd2')" in result.stderr


# --- the key, and a real `llm` process --------------------------------------------------------------


def test_the_key_is_never_stored_or_shown(fake, cli, tmp_path, user_dir):
    fake.batch_fail_ids = {"t2"}
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS), "-m", "mistral-small", "--wait")
    outputs = [cli("mistral", "batch", "results", job_id), cli("mistral", "batch", "status", job_id, "--json"),
               cli("mistral", "batch", "list", "--local", "--json"), cli("logs", "--json")]
    embed = assert_cli_ok(cli("mistral", "batch", "embed", "d", jsonl(tmp_path / "d.jsonl", PROMPTS), "-m",
                              "mistral-embed", "--store", "--wait")).splitlines()[0]
    outputs.append(cli("mistral", "batch", "results", embed))
    assert all(SENTINEL_KEY not in result.stdout + result.stderr for result in outputs)
    scanned = [path for path in user_dir.rglob("*") if path.is_file()]
    assert {"logs.db", "embeddings.db", "mistral-suite-batches.json", f"{job_id}.jsonl"} <= {p.name for p in scanned}
    for path in scanned:
        assert SENTINEL_KEY.encode() not in path.read_bytes(), path


def test_the_whole_flow_in_a_real_llm_process(fake, run_llm, cli_env):
    env = {**cli_env, "LLM_MISTRAL_BATCH_POLL": "0"}
    submitted = run_llm("mistral", "batch", "submit", "-", "-m", "mistral-small", "--wait", input="Say hi\nSay bye\n", env=env)
    job_id = assert_cli_ok(submitted).strip()
    assert "ended: SUCCESS" in submitted.stderr
    assert "Logged 2 responses" in assert_cli_ok(run_llm("mistral", "batch", "results", job_id, env=env))
    assert "echo: Say bye" in assert_cli_ok(run_llm("logs", "-n", "2", env=env))


def test_ctrl_c_stops_waiting_and_never_the_job(fake, cli, tmp_path, cli_env):
    fake.batch_polls = 10**6
    job_id = submit(cli, jsonl(tmp_path / "t.jsonl", PROMPTS), "-m", "mistral-small")
    process = subprocess.Popen([sys.executable, "-m", "llm", "mistral", "batch", "wait", job_id],
                               env={**cli_env, "LLM_MISTRAL_BATCH_POLL": "0.2"}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and fake.batch_jobs[job_id].polls < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Stopped waiting" in stderr and f"llm mistral batch cancel {job_id}" in stderr and "Traceback" not in stderr
    assert not any(rec.path.endswith("/cancel") for rec in fake.requests)
    assert fake.batch_jobs[job_id].status == "RUNNING"
