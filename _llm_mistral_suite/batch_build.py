"""Batch requests built from an input: each prompt's live request body, or packed embedding requests, in JSONL files within the service's limits."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, NamedTuple, Optional

import llm

from .batch import requests_dir, requests_path
from .batch_input import InputRow, input_error
from .catalog import RETIRED
from .chat import MistralChat
from .embeddings import MistralEmbedding, input_problem, pack_batches
from .errors import MistralSuiteError
from .fim import CodestralFIM
from .routes import retired_message
from .servers import ServerEmbedding

# The service's limits (docs.mistral.ai, "Known limitations"): 512 MB a file and 100,000 requests a job.
# Files are cut a little under 512 MB (whether MB means 10^6 or 2^20 bytes is not said).
MAX_BATCH_FILE_BYTES = 500_000_000
MAX_REQUESTS_PER_JOB = 100_000
EMBED_WINDOW = 4096  # items packed at a time: the packing of a stream equals the packing of the whole list


class RequestLine(NamedTuple):
    """One request of a batch: where it came from, its custom_id and body, and what results need to log it."""

    where: str
    custom_id: str
    body: dict[str, Any]
    details: dict[str, Any]
    items: int = 1  # inputs it carries (embedding requests carry many)


class PreparedJob:
    """One job's request files, and its requests file (the details of each request, by custom_id)."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.requests = 0
        self.items = 0
        requests_dir().mkdir(parents=True, exist_ok=True)
        self.details_path = requests_dir() / f".pending-{uuid.uuid4().hex}.jsonl"
        self.details: IO[bytes] = open(self.details_path, "wb")

    def keep_as(self, job_id: str) -> None:
        """Keep the details under the job's id (once the service has accepted the job)."""
        self.details.close()
        self.details_path.replace(requests_path(job_id))


class RequestFiles:
    """Request lines written to JSONL files on disk: a new file before one would pass MAX_BATCH_FILE_BYTES, a new
    job past MAX_REQUESTS_PER_JOB requests. Nothing is uploaded until every line was built."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.jobs: list[PreparedJob] = []
        self._file: Optional[IO[bytes]] = None
        self._size = 0

    def add(self, line: RequestLine) -> None:
        data = (json.dumps({"custom_id": line.custom_id, "body": line.body}, ensure_ascii=False,
                           separators=(",", ":")) + "\n").encode("utf-8")
        if len(data) > MAX_BATCH_FILE_BYTES:
            raise input_error(line.where, f"its request is {len(data) / 1e6:,.0f} MB; a batch file takes at most "
                                          f"{MAX_BATCH_FILE_BYTES / 1e6:,.0f} MB.")
        if not self.jobs or self.jobs[-1].requests >= MAX_REQUESTS_PER_JOB:
            self.jobs.append(PreparedJob())
            self._next_file()
        elif self._size + len(data) > MAX_BATCH_FILE_BYTES:
            self._next_file()
        job = self.jobs[-1]
        assert self._file is not None
        self._file.write(data)
        self._size += len(data)
        job.details.write((json.dumps({"custom_id": line.custom_id, **line.details}, ensure_ascii=False) + "\n").encode())
        job.requests += 1
        job.items += line.items

    def _next_file(self) -> None:
        if self._file is not None:
            self._file.close()
        path = self.directory / f"requests-{sum(len(job.files) for job in self.jobs) + 1}.jsonl"
        self._file, self._size = open(path, "wb"), 0
        self.jobs[-1].files.append(path)

    def finish(self) -> list[PreparedJob]:
        """Close the files; the prepared jobs."""
        if self._file is not None:
            self._file.close()
        for job in self.jobs:
            job.details.flush()
        return self.jobs

    def discard(self) -> None:
        """Forget the details of jobs that were never created."""
        for job in self.jobs:
            if not job.details.closed:
                job.details.close()
            job.details_path.unlink(missing_ok=True)


# --- prompts ---------------------------------------------------------------------------------------


def batch_chat_model(name: Optional[str]) -> llm.Model:
    """The Mistral API chat (or fill-in-the-middle) model ``name`` names; llm's default model without one."""
    model = llm.get_model(name or llm.get_default_model())
    if not isinstance(model, (MistralChat, CodestralFIM)):
        raise MistralSuiteError(
            f"{model.model_id} does not run on Mistral's API; batch jobs need one of its chat models, such as "
            "mistral-small (`llm mistral models` lists them)."
        )
    if isinstance(model, MistralChat) and model.entry.status == RETIRED:
        raise MistralSuiteError(retired_message(model.entry))
    return model


class PromptColumns(NamedTuple):
    """Which fields of a JSONL/CSV row hold what; None: the first of the usual names that is there."""

    id: Optional[str] = None  # id, custom_id
    prompt: Optional[str] = None  # prompt, content
    system: str = "system"
    options: str = "options"
    attachments: str = "attachments"


def _json_object(value: Any, where: str, what: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise input_error(where, f"its {what} are not a JSON object: {value[:100]!r}") from None
    if not isinstance(value, dict):
        raise input_error(where, f"its {what} are not a JSON object.")
    return value


def resolve_attachment(value: Any, model: llm.Model, where: str) -> llm.Attachment:
    """An attachment (a path or URL) checked against the types the model takes."""
    from llm.cli import AttachmentError
    from llm.cli import resolve_attachment as llm_resolve_attachment

    if not isinstance(value, str) or not value.strip():
        raise input_error(where, f"attachment {value!r} is not a path or URL.")
    if value == "-":
        raise input_error(where, "a batch cannot take an attachment from standard input; give a path or URL.")
    try:
        attachment = llm_resolve_attachment(value)
    except AttachmentError as error:
        raise input_error(where, str(error)) from None
    if attachment.type not in model.attachment_types:
        takes = ", ".join(sorted(model.attachment_types)) or "no attachments"
        raise input_error(where, f"{model.model_id} cannot take {attachment.type} attachments ({value}); it takes {takes}.")
    return attachment


class ChatRequests:
    """Request lines for prompts, each body built by the model's own ``reply_request``: byte for byte what
    ``llm -m MODEL --no-stream`` sends for that prompt, system prompt, options, schema and attachments, except the
    ``prompt_cache_key`` a live prompt takes from its conversation (a batch line belongs to none)."""

    def __init__(self, model: llm.Model, system: Optional[str], options: dict[str, Any], schema: Optional[dict],
                 attachments: list[llm.Attachment], columns: PromptColumns) -> None:
        from llm.cli import get_model_options

        self.model, self.system, self.schema, self.attachments, self.columns = model, system, schema, attachments, columns
        self.options = {**get_model_options(model.model_id), **options}  # llm's defaults for the model, then -o
        self.seen: set[str] = set()
        self.api_model: Optional[str] = None
        self.path: Optional[str] = None

    def lines(self, rows: Iterable[InputRow]) -> Iterator[RequestLine]:
        for row in rows:
            yield self.line(row)

    def line(self, row: InputRow) -> RequestLine:
        from pydantic import ValidationError

        text, custom_id, system, options, attachments = self.fields(row)
        if custom_id in self.seen:
            raise input_error(row.where, f"id {custom_id!r} appears twice; results are matched to prompts by id.")
        self.seen.add(custom_id)
        try:
            prompt = llm.Prompt(text, self.model, system=system, attachments=attachments, schema=self.schema,
                                options=self.model.Options(**options))
            request = self.model.reply_request(prompt, False, None)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise input_error(row.where, f"bad option: {problems}") from None
        except MistralSuiteError as error:
            raise input_error(row.where, error.message) from None
        body = request.body
        if self.api_model is None:
            self.api_model, self.path = body["model"], "/v1" + request.path
        elif body["model"] != self.api_model:
            raise input_error(row.where, f"it asks for {body['model']}, but a batch job runs one model ({self.api_model}).")
        details = {  # attachments with the hash llm logs them by: results may come after a file was moved
            "prompt": text, "system": system,
            "options": {name: value for name, value in dict(prompt.options).items() if value is not None},
            "attachments": [{"type": a.type, "path": a.path, "url": a.url, "id": a.id()} for a in attachments],
        }
        return RequestLine(row.where, custom_id, body, details)

    def fields(self, row: InputRow) -> tuple[str, str, Optional[str], dict[str, Any], list[llm.Attachment]]:
        """A row's prompt, custom_id, system prompt, options and attachments."""
        value = row.value
        if isinstance(value, str):
            return value, str(row.number), self.system, dict(self.options), list(self.attachments)
        columns = self.columns
        prompt_key = columns.prompt or next((k for k in ("prompt", "content") if k in value), None)
        if prompt_key not in value:
            wanted = repr(columns.prompt) if columns.prompt else "'prompt' or 'content'"
            raise input_error(row.where, f"it has no {wanted} field (it has {', '.join(map(repr, value)) or 'none'}); "
                                         "name the prompt's column with --prompt-column.")
        text = value[prompt_key]
        if not isinstance(text, str) or not text.strip():
            raise input_error(row.where, f"its prompt ({prompt_key!r}) is {'empty' if isinstance(text, str) or text is None else 'not text'}.")
        id_key = columns.id or next((k for k in ("id", "custom_id") if k in value), None)
        if columns.id and columns.id not in value:
            raise input_error(row.where, f"it has no {columns.id!r} field for its id.")
        custom_id = value.get(id_key) if id_key else None
        if isinstance(custom_id, (dict, list, bool)) or (id_key and custom_id in (None, "")):
            raise input_error(row.where, f"its id ({id_key!r}) is {'empty' if custom_id in (None, '') else 'not text or a number'}.")
        system = value.get(columns.system) or self.system
        if system is not None and not isinstance(system, str):
            raise input_error(row.where, f"its system prompt ({columns.system!r}) is not text.")
        options = {**self.options, **_json_object(value.get(columns.options), row.where, "options")}
        extra = value.get(columns.attachments) or []
        if isinstance(extra, str) and extra.startswith("["):  # a JSON list in a CSV cell
            try:
                extra = json.loads(extra)
            except ValueError:
                raise input_error(row.where, f"its attachments are not a JSON list: {extra[:100]!r}") from None
        extra = [extra] if isinstance(extra, str) else extra
        if not isinstance(extra, list):
            raise input_error(row.where, f"its attachments ({columns.attachments!r}) are not a path, a URL or a list of them.")
        attachments = self.attachments + [resolve_attachment(item, self.model, row.where) for item in extra]
        return text, str(row.number) if custom_id is None else str(custom_id), system, options, attachments


# --- embeddings ------------------------------------------------------------------------------------


def batch_embedding_model(name: Optional[str]) -> MistralEmbedding:
    """The Mistral API embedding model ``name`` names; llm's default embedding model without one."""
    name = name or llm.get_default_embedding_model()
    if not name:
        raise MistralSuiteError("Give an embedding model with -m, such as -m mistral-embed.")
    model = llm.get_embedding_model(name)
    if not isinstance(model, MistralEmbedding) or isinstance(model, ServerEmbedding):
        raise MistralSuiteError(
            f"{model.model_id} does not run on Mistral's API; batch embeddings need mistral-embed or codestral-embed."
        )
    return model


class EmbedRequests:
    """Request lines for items to embed (``llm embed-multi``'s rows: the first field is the id, the others the
    content), packed by tokens as the live model packs them; items whose content the collection already holds
    under their id are skipped, as ``llm embed-multi`` skips them."""

    def __init__(self, model: MistralEmbedding, db: Any, collection_id: Optional[int], store: bool,
                 prefix: str = "", prepend: str = "") -> None:
        self.model, self.db, self.collection_id, self.store = model, db, collection_id, store
        self.prefix, self.prepend = prefix, prepend
        self.count = 0
        self.skipped = 0

    def lines(self, rows: Iterable[InputRow]) -> Iterator[RequestLine]:
        pending: list[tuple[str, str, str, Optional[dict]]] = []
        fresh: list[tuple[str, str, str, Optional[dict]]] = []
        for row in rows:
            fresh.append(self.item(row))
            if len(fresh) >= 500:
                pending += self.unchanged_skipped(fresh)
                fresh = []
            if len(pending) >= EMBED_WINDOW:
                pending = yield from self.packed(pending, final=False)
        yield from self.packed(pending + self.unchanged_skipped(fresh), final=True)

    def item(self, row: InputRow) -> tuple[str, str, str, Optional[dict]]:
        """(id, content, content hash, metadata) of a row."""
        from llm import Collection

        value = row.value
        metadata = None
        if isinstance(value, str):
            item_id, content = str(row.number), value
        else:
            fields = dict(value)
            if isinstance(fields.get("metadata"), dict):
                metadata = fields.pop("metadata")
            values = list(fields.values())
            if len(values) < 2:
                raise input_error(row.where, "it needs an id and some content (the first field is the id, the others "
                                             "are the content, as for llm embed-multi).")
            item_id = str(values[0])
            content = " ".join("" if v is None else v if isinstance(v, str) else json.dumps(v) for v in values[1:])
        item_id, content = self.prefix + item_id, self.prepend + content
        problem = input_problem(content)
        if problem:
            raise input_error(row.where, f"item {item_id!r} {problem}")
        return item_id, content, Collection.content_hash(content).hex(), metadata

    def unchanged_skipped(self, items: list[tuple[str, str, str, Optional[dict]]]) -> list[tuple[str, str, str, Optional[dict]]]:
        if self.collection_id is None or not items:
            return items
        placeholders = ",".join("?" * len(items))
        stored = {
            (row[0], bytes(row[1]).hex())
            for row in self.db.execute(
                f"select id, content_hash from embeddings where collection_id = ? and id in ({placeholders})",
                [self.collection_id, *(item[0] for item in items)],
            ).fetchall()
            if row[1] is not None
        }
        kept = [item for item in items if (item[0], item[2]) not in stored]
        self.skipped += len(items) - len(kept)
        return kept

    def packed(self, items: list[tuple[str, str, str, Optional[dict]]], final: bool):  # type: ignore[no-untyped-def]
        """Lines for the packed requests of ``items``; without ``final`` the last, maybe unfilled, request is held
        back and its items returned, to be packed with the next ones."""
        batches = pack_batches([item[1] for item in items], self.model.max_inputs, self.model.max_tokens)
        keep = [] if final or not batches else items[batches[-1].start :]
        for batch in batches if final else batches[:-1]:
            chunk = items[batch.start : batch.stop]
            self.count += 1
            # base64 float32 answers: a result file half the size of JSON floats, for the same vectors
            body = self.model.request_body([item[1] for item in chunk], None,
                                           base64=self.model.encoding_format == "base64")
            details = {"items": [[item[0], item[2], item[1] if self.store else None, item[3]] for item in chunk]}
            yield RequestLine(f"request {self.count}", str(self.count), body, details, len(chunk))
        return keep
