"""``llm mistral batch ...``: prompts and embeddings sent to Mistral's Batch API, the jobs followed, their results brought into llm's databases."""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import click
import llm

from .batch import (
    ACTIVE,
    ENDED,
    cancel_job,
    check_jobs_file,
    ended_error,
    get_job,
    list_jobs,
    now_iso,
    progress,
    remember_job,
    remembered_jobs,
    resolve_job_id,
    submit_files,
    wait_for_job,
)
from . import batch_build
from .batch_build import (
    ChatRequests,
    EmbedRequests,
    PromptColumns,
    RequestFiles,
    RequestLine,
    batch_chat_model,
    batch_embedding_model,
    resolve_attachment,
)
from .batch_input import FORMATS, InputRow, detect_format, files_rows, open_input, read_rows
from .batch_results import ChatResults, EmbeddingResults, Summary, lock_reported, open_database
from .errors import MistralSuiteError
from .settings import mistral_key

FORMAT_CHOICE = click.Choice([*FORMATS, "jsonl"])


@click.group(name="batch")
def batch_group() -> None:
    """Mistral's Batch API: many prompts or embeddings at half the price, results within hours.

    \b
    llm mistral batch submit prompts.txt -m mistral-small     # prints the job id
    llm mistral batch wait ID                                 # progress until it ends
    llm mistral batch results ID                              # answers into logs.db
    """


def job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options every submitting command takes."""
    for option in reversed([
        click.option("--metadata", "metadata", type=(str, str), multiple=True, help="Job metadata KEY VALUE (repeatable)"),
        click.option("--timeout-hours", type=click.IntRange(1, 168), help="Hours the job may run (service default 24)"),
        click.option("--wait", is_flag=True, help="Wait for the job to end, with a progress bar"),
        click.option("--key", help="Mistral API key to use"),
    ]):
        command = option(command)
    return command


def _metadata(kind: str, pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    metadata = {"source": "llm-mistral-suite", "kind": kind}
    for name, value in pairs:
        if not 1 <= len(name) <= 32 or not 1 <= len(value) <= 512:
            raise click.BadParameter("keys take 1 to 32 characters, values 1 to 512", param_hint="--metadata")
        metadata[name] = value
    return metadata


def _model(lookup: Callable[[Optional[str]], Any], name: Optional[str]) -> Any:
    try:
        return lookup(name)
    except llm.UnknownModelError as error:  # a KeyError: str() would quote its message
        raise MistralSuiteError(f"{error.args[0]}. `llm mistral models` lists Mistral's models.") from None


def _rows(input_path: str, fmt: Optional[str], plain_text: bool) -> Iterable[InputRow]:
    stream = open_input(input_path)
    try:
        yield from read_rows(stream, "nl" if fmt == "jsonl" else fmt or detect_format(input_path, stream, plain_text))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _submit(key: str, lines: Iterable[RequestLine], kind: str, endpoint: Callable[[], tuple[str, str]],
            record: dict[str, Any], metadata: dict[str, str], timeout_hours: Optional[int], what: str,
            why_empty: Callable[[], str]) -> list[str]:
    """Write every line to disk (a bad one stops everything before anything is uploaded), then upload each job's
    files and create the job; prints and remembers each job id."""
    check_jobs_file()
    submitted: list[str] = []
    with tempfile.TemporaryDirectory(prefix="llm-mistral-batch-") as directory:
        files = RequestFiles(Path(directory))
        try:
            for line in lines:
                files.add(line)
            jobs = files.finish()
            if not jobs:
                raise MistralSuiteError(f"There is nothing to submit: {why_empty()}.")
            path, model = endpoint()
            for number, prepared in enumerate(jobs, 1):
                try:
                    job = submit_files(key, prepared.files, path, model, metadata, timeout_hours)
                except MistralSuiteError as error:
                    if not submitted:
                        raise
                    raise MistralSuiteError(f"Job {number} of {len(jobs)} could not be created ({error.message}); "
                                            f"jobs {', '.join(submitted)} were submitted.") from None
                prepared.keep_as(job["id"])
                submitted.append(job["id"])
                click.echo(job["id"])  # before remembering it: a job created is never one the user does not hear of
                remember_job(job["id"], {**record, "kind": kind, "api_model": model, "endpoint": path,
                                         "requests": prepared.requests, "items": prepared.items, "created": now_iso()})
                part = (f" (part {number} of {len(jobs)}: a job takes at most {batch_build.MAX_REQUESTS_PER_JOB:,} "
                        "requests)" if len(jobs) > 1 else "")
                count = f"{prepared.items:,} {what}" + (f" in {prepared.requests:,} requests" if kind == "embed" else "")
                click.echo(f"Submitted {count} to {model} as batch job {job['id']}{part}.", err=True)
        finally:
            files.discard()
    return submitted


def _wait(key: str, job_id: str) -> dict[str, Any]:
    """Wait for a job with a progress bar on stderr; Ctrl-C stops waiting (exit status 130), never the job."""
    bar: Any = None
    shown = 0

    def on_poll(job: dict[str, Any]) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=max(1, job.get("total_requests") or 0), label=f"Job {job_id[:8]}",
                                    file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.label = f"Job {job_id[:8]} {job['status']}"
        done = min(job.get("completed_requests") or 0, bar.length)
        bar.update(done - shown)
        shown = done

    try:
        job = wait_for_job(key, job_id, on_poll)
    except KeyboardInterrupt:
        if bar is not None:
            bar.render_finish()
        click.echo(f"\nStopped waiting. Batch job {job_id} goes on at Mistral: `llm mistral batch wait {job_id}` "
                   f"waits again, `llm mistral batch cancel {job_id}` cancels it.", err=True)
        raise SystemExit(130) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(f"Batch job {job_id} ended: {job['status']}, {progress(job)}.", err=True)
    return job


def _wait_all(key: str, job_ids: list[str]) -> None:
    """Wait for each job; one that did not succeed is an error (its results stay available to `results`)."""
    problems = [problem for problem in (ended_error(_wait(key, job_id)) for job_id in job_ids) if problem]
    if problems:
        raise MistralSuiteError("; ".join(problems) + ". `llm mistral batch results ID` takes in what it finished.")


@batch_group.command(name="submit")
@click.argument("input_path", metavar="INPUT")
@click.option("-m", "--model", "model_name", help="A Mistral API chat model (default: llm's default model)")
@click.option("-s", "--system", help="System prompt for every row (a row's own `system` wins)")
@click.option("-o", "--option", "options", type=(str, str), multiple=True, help="Option for every row, e.g. -o temperature 0")
@click.option("--schema", help="JSON schema, llm's concise schema syntax, or a schema file or id")
@click.option("--schema-multi", help="As --schema, for a list of such objects")
@click.option("-a", "--attachment", "attachments", multiple=True, help="Attachment (path or URL) for every row")
@click.option("--format", "fmt", type=FORMAT_CHOICE, help="Input format (default: from the extension or content)")
@click.option("--id-column", help="Field holding each row's id (default: id or custom_id; else the line number)")
@click.option("--prompt-column", help="Field holding the prompt (default: prompt or content)")
@click.option("--system-column", default="system", show_default=True, help="Field holding a row's system prompt")
@click.option("--options-column", default="options", show_default=True, help="Field holding a row's options (a JSON object)")
@click.option("--attachments-column", default="attachments", show_default=True, help="Field holding a row's attachments")
@job_options
def submit_command(input_path, model_name, system, options, schema, schema_multi, attachments, fmt, id_column,
                   prompt_column, system_column, options_column, attachments_column, metadata, timeout_hours, wait, key):
    """Send the prompts in INPUT (a file, or - for standard input) as a batch job; prints the job id (one a line
    when more than 100,000 prompts make several jobs).

    INPUT is plain text with one prompt per line (ids are line numbers), or JSONL, JSON, CSV or TSV rows with an
    `id` and a `prompt` (or `content`), and optionally a `system` prompt, `options` and `attachments`. Each
    request is what `llm -m MODEL --no-stream` sends for that prompt, without the conversation's prompt_cache_key.
    """
    import sqlite_utils
    from llm.cli import load_template, logs_db_path, render_errors
    from llm.utils import multi_schema, resolve_schema_input
    from pydantic import ValidationError

    model = _model(batch_chat_model, model_name)
    try:
        model.Options(**dict(options))
    except ValidationError as error:
        raise click.ClickException(render_errors(error.errors())) from None
    if schema and schema_multi:
        raise click.UsageError("give --schema or --schema-multi, not both")
    schema_dict = None
    if schema or schema_multi:
        if not model.supports_schema:
            raise MistralSuiteError(f"{model.model_id} does not take a schema.")
        with sqlite_utils.Database(logs_db_path()) as db:
            schema_dict = resolve_schema_input(db, schema or schema_multi, load_template)
        schema_dict = multi_schema(schema_dict) if schema_multi else schema_dict
    api_key = mistral_key(key)
    resolved = [resolve_attachment(value, model, f"attachment {value}") for value in attachments]
    columns = PromptColumns(id_column, prompt_column, system_column, options_column, attachments_column)
    requests = ChatRequests(model, system, dict(options), schema_dict, resolved, columns)
    record = {"model": model.model_id, "input": input_path if input_path == "-" else str(Path(input_path).resolve()),
              "schema": schema_dict}
    ids = _submit(api_key, requests.lines(_rows(input_path, fmt, plain_text=True)), "chat",
                  lambda: (requests.path or "", requests.api_model or ""), record, _metadata("chat", metadata),
                  timeout_hours, "prompts", lambda: "the input holds no prompts")
    if wait:
        _wait_all(api_key, ids)


@batch_group.command(name="embed")
@click.argument("collection")
@click.argument("input_path", metavar="[INPUT]", required=False)
@click.option("-m", "--model", "model_name", help="mistral-embed or codestral-embed (default: the collection's)")
@click.option("-d", "--database", type=click.Path(dir_okay=False), envvar="LLM_EMBEDDINGS_DB",
              help="Embeddings database (default: llm's embeddings.db)")
@click.option("--store", is_flag=True, help="Store the text itself in the database")
@click.option("--format", "fmt", type=FORMAT_CHOICE, help="Input format (default: from the extension or content)")
@click.option("--files", type=(click.Path(file_okay=False), str), multiple=True, help="Embed files: DIRECTORY GLOB")
@click.option("--encoding", "encodings", multiple=True, help="Encodings to try when reading --files")
@click.option("--sql", help="Read the rows with this SQL query (on the embeddings database)")
@click.option("--attach", type=(str, click.Path(dir_okay=False)), multiple=True, help="Attach a database: ALIAS PATH")
@click.option("--prefix", default="", help="Prefix for the ids")
@click.option("--prepend", default="", help="Text put before every content")
@job_options
def embed_command(collection, input_path, model_name, database, store, fmt, files, encodings, sql, attach, prefix,
                  prepend, metadata, timeout_hours, wait, key):
    """Embed INPUT into COLLECTION through a batch job: the rows `llm embed-multi` takes (the first field is the
    id, the others the content; CSV, TSV, JSON, JSONL, or plain text with one item per line), --files or --sql.

    Requests are packed by tokens as the live model packs them; items the collection already holds with the same
    content are skipped. `llm mistral batch results ID` stores the vectors as `llm embed-multi` would.
    """
    import sqlite_utils
    from llm.cli import user_dir

    if sum(map(bool, (input_path, files, sql))) != 1:
        raise click.UsageError("give one of INPUT, --files or --sql")
    path = Path(database) if database else user_dir() / "embeddings.db"
    db = sqlite_utils.Database(path) if path.exists() or sql else None
    existing = None
    if db is not None and db["collections"].exists():
        existing = next(iter(db["collections"].rows_where("name = ?", [collection])), None)
    model = _model(batch_embedding_model, model_name or (existing or {}).get("model"))
    if existing and existing["model"] != model.model_id:
        raise MistralSuiteError(f"Collection {collection!r} holds {existing['model']} embeddings, not "
                                f"{model.model_id} ones; use -m {existing['model']} or another collection.")
    api_key = mistral_key(key)
    if files:
        rows: Iterable[InputRow] = files_rows(files, encodings)
    elif sql:
        assert db is not None
        for alias, attach_path in attach:
            db.attach(alias, attach_path)
        rows = (InputRow(f"row {n}", n, dict(row)) for n, row in enumerate(db.query(sql), 1))
    else:
        rows = _rows(input_path, fmt, plain_text=False)
    requests = EmbedRequests(model, db, existing["id"] if existing else None, store, prefix, prepend)
    record = {"model": model.model_id, "collection": collection, "database": str(path.resolve()), "store": store,
              "input": input_path or ("--sql" if sql else "--files")}
    lines = requests.lines(rows)
    ids = _submit(api_key, lines, "embed", lambda: ("/v1/embeddings", model.api_name), record,
                  _metadata("embed", metadata), timeout_hours, "items",
                  lambda: f"all {requests.skipped:,} items are in collection {collection!r} already, with the same "
                          "content" if requests.skipped else "the input holds no items")
    if requests.skipped:
        click.echo(f"{requests.skipped:,} items were skipped: the collection holds them with the same content.", err=True)
    if wait:
        _wait_all(api_key, ids)


def _when(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@batch_group.command(name="list")
@click.option("-n", "--limit", type=click.IntRange(1, 10000), default=20, show_default=True, help="How many jobs")
@click.option("--status", "statuses", type=click.Choice([*ACTIVE, *ENDED]), multiple=True, help="Only jobs in this state")
@click.option("--local", is_flag=True, help="Only the jobs submitted from here, without asking the service")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
@click.option("--key", help="Mistral API key to use")
def list_command(limit, statuses, local, as_json, key):
    """List batch jobs, newest first (those submitted from here show what they hold)."""
    remembered = remembered_jobs()
    if local:
        rows = sorted(({"id": job_id, **record} for job_id, record in remembered.items()),
                      key=lambda row: str(row.get("created")), reverse=True)[:limit]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        for row in rows if not as_json else ():
            target = row.get("collection") or "logs.db"
            click.echo(f"{row['id']}  {row.get('created', '')}  {row.get('kind')}  {row.get('api_model')}  "
                       f"{row.get('items', 0):,} items -> {target}  ({row.get('input')})")
        return
    jobs = list_jobs(mistral_key(key), limit, statuses)
    if as_json:
        click.echo(json.dumps(jobs, indent=2))
        return
    for job in jobs:
        record = remembered.get(job["id"])
        what = f"{record['kind']} -> {record.get('collection') or 'logs.db'}" if record else job.get("endpoint", "")
        click.echo(f"{job['id']}  {job['status']:<22} {_when(job.get('created_at'))}  {job.get('model') or '-'}  "
                   f"{job.get('completed_requests') or 0:,}/{job.get('total_requests') or 0:,}  {what}")


@batch_group.command(name="status")
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Output the job as the service describes it")
@click.option("--key", help="Mistral API key to use")
def status_command(job_id, as_json, key):
    """Show a batch job: its state, request counts and times (ID, or the start of an id submitted from here)."""
    job_id = resolve_job_id(job_id)
    job = get_job(mistral_key(key), job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    record = remembered_jobs().get(job_id)
    click.echo(f"Batch job {job_id}: {job['status']}")
    click.echo(f"  model: {job.get('model') or '-'} ({job.get('endpoint')})")
    click.echo(f"  requests: {progress(job)}")
    click.echo(f"  created: {_when(job.get('created_at'))}, started: {_when(job.get('started_at'))}, "
               f"ended: {_when(job.get('completed_at'))}")
    if record:
        target = f"collection {record['collection']!r} in {record['database']}" if record["kind"] == "embed" else "logs.db"
        click.echo(f"  submitted from here: {record.get('items', 0):,} {'items' if record['kind'] == 'embed' else 'prompts'} "
                   f"from {record.get('input')}; results go to {target}")
    for error in job.get("errors") or ():
        click.echo(f"  error: {error.get('message')}" + (f" ({error['count']}x)" if error.get("count", 1) != 1 else ""))
    if job["status"] in ENDED and record:
        click.echo(f"  `llm mistral batch results {job_id}` brings the results in.")


@batch_group.command(name="wait")
@click.argument("job_id", metavar="ID")
@click.option("--key", help="Mistral API key to use")
def wait_command(job_id, key):
    """Wait for a batch job to end, with a progress bar; Ctrl-C stops waiting, never the job."""
    _wait_all(mistral_key(key), [resolve_job_id(job_id)])


@batch_group.command(name="cancel")
@click.argument("job_id", metavar="ID")
@click.option("--key", help="Mistral API key to use")
def cancel_command(job_id, key):
    """Cancel a batch job; requests it finished stay available to `results`."""
    job = cancel_job(mistral_key(key), resolve_job_id(job_id))
    click.echo(f"Batch job {job['id']}: {job['status']} ({progress(job)}).")


@batch_group.command(name="results")
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per result too")
@click.option("-n", "--no-log", is_flag=True, help="Write nothing to logs.db or the embeddings database (implies --json)")
@click.option("-d", "--database", type=click.Path(dir_okay=False),
              help="Database to write to (default: logs.db, or the embeddings database given to `embed`)")
@click.option("--wait", is_flag=True, help="Wait for the job to end first")
@click.option("--key", help="Mistral API key to use")
def results_command(job_id, as_json, no_log, database, wait, key):
    """Bring a finished job's results in: each answer logged to logs.db as a normal llm response (so `llm logs`
    shows it), or each vector stored in its collection as `llm embed-multi` stores it. Results are matched to
    requests by custom_id; running it twice adds nothing twice.
    """
    from llm.cli import logs_db_path, logs_on

    api_key = mistral_key(key)
    job_id = resolve_job_id(job_id)
    job = _wait(api_key, job_id) if wait else get_job(api_key, job_id)
    if job["status"] in ACTIVE:
        raise MistralSuiteError(f"Batch job {job_id} is still {job['status']} ({progress(job)}). "
                                f"`llm mistral batch results {job_id} --wait` waits for it.")
    record = remembered_jobs().get(job_id)
    if record is None:
        raise MistralSuiteError(f"Batch job {job_id} was not submitted from here (llm's user directory has no record "
                                "of its prompts), so its results cannot be logged.")
    embed = record["kind"] == "embed"
    write = not no_log and (embed or logs_on())
    if not write and not as_json:
        as_json = True
        click.echo("Logging is off (-n or `llm logs off`): the results are printed, not stored.", err=True)
    path = Path(database) if database else Path(record["database"]) if embed else logs_db_path()
    emit = (lambda item: click.echo(json.dumps(item, ensure_ascii=False))) if as_json else None
    with lock_reported(path, job_id):
        db = open_database(path) if write else None
        results = EmbeddingResults(job, record, db) if embed else ChatResults(job, record, db)
        summary = results.ingest(api_key, emit)
    _report(job, summary, embed, write, path, as_json)


def _report(job: dict[str, Any], summary: Summary, embed: bool, wrote: bool, path: Path, quiet: bool) -> None:
    """Say what ``results`` did; failed requests each on a line of stderr; an error line if anything is missing."""
    what = "vectors" if embed else "responses"
    if wrote:
        again = f" ({summary.already:,} were there already)" if summary.already else ""
        click.echo(f"{'Stored' if embed else 'Logged'} {summary.written:,} {what} of batch job {job['id']} in {path}{again}.",
                   err=quiet)
    for name, message in summary.failed:
        click.echo(f"Failed {name}: {message}", err=True)
    problem = ended_error(job)
    if problem:
        unrun = f"; {summary.missing:,} {'request was' if summary.missing == 1 else 'requests were'} never run" if summary.missing else ""
        raise MistralSuiteError(f"{problem}{unrun}. The results it has were {'stored' if wrote else 'printed'}.")
    if summary.missing:
        raise MistralSuiteError(f"{summary.missing:,} of {job.get('total_requests'):,} requests of batch job {job['id']} "
                                "have no result in its output or error file; the results it has were "
                                f"{'stored' if wrote else 'printed'}.")
    if summary.failed:
        raise MistralSuiteError(f"{len(summary.failed):,} of {job.get('total_requests') or len(summary.seen):,} requests "
                                f"of batch job {job['id']} failed (listed above); the other results were "
                                f"{'stored' if wrote else 'printed'}.")
