"""A finished batch job's results: answers logged to logs.db as llm responses, vectors stored as llm embed-multi stores them."""

from __future__ import annotations

import binascii
import contextlib
import datetime
import hashlib
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Optional

import llm

from .batch import BatchResult, download_file, read_results, requests_path
from .errors import MistralSuiteError
from .logs_writer import LoggedTurn, LogsWriter
from .wire import ReplyDecoder

CHUNK = 1000  # results written per executemany round
BUSY_SECONDS = 5.0  # how long a statement waits for another process holding the database locked


def open_database(path: Path) -> Any:
    """The logs or embeddings database at ``path``, waiting up to BUSY_SECONDS for another process's lock."""
    import sqlite_utils

    return sqlite_utils.Database(sqlite3.connect(str(path), timeout=BUSY_SECONDS))


@contextlib.contextmanager
def lock_reported(path: Path, job_id: str) -> Iterator[None]:
    """A database another process still holds locked after BUSY_SECONDS, as one error. The file of results being
    read is stored in one transaction, so none of it was; running ``results`` again stores nothing twice."""
    try:
        yield
    except sqlite3.OperationalError as error:
        if "locked" not in str(error):  # "database is locked", "database table is locked"
            raise
        raise MistralSuiteError(
            f"{path} is locked by another process (still busy after {BUSY_SECONDS:g} s), so the results were not "
            f"stored. Run `llm mistral batch results {job_id}` again once it is free: results stored already are "
            "never stored twice."
        ) from None


class RequestDetails:
    """A job's requests file (one JSON line per request, by custom_id), read by id through an index of line
    offsets rather than held in memory."""

    def __init__(self, path: Path) -> None:
        try:
            self.file: IO[bytes] = open(path, "rb")
        except OSError:
            raise MistralSuiteError(f"The details of this job's requests are missing ({path}).") from None
        self.offsets: dict[str, tuple[int, int]] = {}  # custom_id -> (offset, position in the job)
        decoder = json.JSONDecoder()
        offset = 0
        for line in self.file:
            text = line.decode("utf-8")
            if text.startswith('{"custom_id": '):  # how batch_build writes them: the id first
                self.offsets[decoder.raw_decode(text, 14)[0]] = (offset, len(self.offsets))
            offset += len(line)

    def get(self, custom_id: Optional[str]) -> Optional[dict[str, Any]]:
        """The request's details, with its position in the job as ``position``."""
        if custom_id not in self.offsets:
            return None
        offset, position = self.offsets[custom_id]
        self.file.seek(offset)
        return {**json.loads(self.file.readline()), "position": position}

    def close(self) -> None:
        self.file.close()


class Summary:
    """What ``results`` did: answers (or vectors) written, already there, failed, and requests never run."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.written = 0
        self.already = 0
        self.failed: list[tuple[str, str]] = []  # (custom_id or where, the service's error)
        self.seen: set[str] = set()

    def fail(self, name: Optional[str], message: str) -> None:
        self.failed.append((name or "?", message))

    @property
    def missing(self) -> int:
        return max(0, self.total - len(self.seen))


def result_files(key: str, job: dict[str, Any]) -> Iterator[tuple[str, Iterator[BatchResult]]]:
    """Each of the job's output and error files, downloaded to a temporary file and read line by line."""
    for name in ("output", "error"):
        file_id = job.get(f"{name}_file")
        if not file_id:
            continue
        with tempfile.TemporaryFile(prefix="llm-mistral-batch-") as downloaded:
            download_file(key, file_id, downloaded)
            yield name, read_results(downloaded, name)


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # ULIDs' base 32, lower case as llm writes its ids


def batch_ulid(seconds: float, position: int, *parts: str) -> str:
    """A ULID (as llm's ids are) for the time of the answer whose random part is the request's position in the
    job and a hash of ``parts``: the same result always gets the same id, so logging it again adds nothing, and
    answers of the same second list in the input's order."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=6).digest()
    number = int.from_bytes(int(seconds * 1000).to_bytes(6, "big") + position.to_bytes(4, "big") + digest, "big")
    return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))


Emit = Optional[Callable[[dict[str, Any]], None]]


def known_model(lookup: Callable[[str], Any], model_id: str) -> Any:
    try:
        return lookup(model_id)
    except llm.UnknownModelError:
        raise MistralSuiteError(f"The job was submitted for {model_id}, which llm no longer knows; its results need "
                                "that model (is a plugin or a `llm mistral refresh` model missing?).") from None


def stored_attachment(stored: dict[str, Any]) -> llm.Attachment:
    """An attachment of a request as its details keep it, with the content hash taken when it was submitted, so
    logging it never reads the file (moved or deleted by the time results come, llm logs it all the same). Details
    kept before that hash was read the file now: an error if it is gone."""
    attachment = llm.Attachment(type=stored["type"], path=stored["path"], url=stored["url"], _id=stored.get("id"))
    try:
        attachment.id()
    except OSError as error:
        raise MistralSuiteError(f"its attachment {stored['path']} cannot be read ({error.strerror or error}), so its "
                                "answer was not logged; put the file back and run `results` again.") from None
    return attachment


class JobResults:
    """Reading a job's result files into a database (``db``; None to only print them), one transaction per file."""

    job: dict[str, Any]
    db: Any

    def ingest(self, key: str, emit: Emit) -> Summary:
        """Download the job's output and error files and take in every result."""
        return self.ingest_files(result_files(key, self.job), emit)

    def ingest_files(self, files: Iterable[tuple[str, Iterator[BatchResult]]], emit: Emit) -> Summary:
        summary = Summary(self.job.get("total_requests") or 0)
        details = RequestDetails(requests_path(self.job["id"]))
        try:
            for _, results in files:
                if self.db is None:
                    self.read(results, details, summary, emit)
                else:
                    with self.db.atomic():  # all of the file or none of it
                        self.read(results, details, summary, emit)
        finally:
            details.close()
        return summary

    def read(self, results: Iterator[BatchResult], details: RequestDetails, summary: Summary, emit: Emit) -> None:
        raise NotImplementedError


class ChatResults(JobResults):
    """Answers of a chat (or fill-in-the-middle) job turned into llm responses, decoded by the same
    ``ReplyDecoder`` as a live reply, and logged."""

    def __init__(self, job: dict[str, Any], record: dict[str, Any], db: Any) -> None:
        self.job, self.record, self.db = job, record, db
        self.model = known_model(llm.get_model, record["model"])
        self.writer = LogsWriter(db) if db is not None else None
        self.options: dict[str, llm.Options] = {}
        self.schema = record.get("schema")

    def ids(self, custom_id: str, details: dict[str, Any], body: dict[str, Any]) -> tuple[float, str, str]:
        """When the answer was made, and the ids of its turn and its thread."""
        created = body.get("created") if isinstance(body.get("created"), (int, float)) else None
        created = created or self.job.get("completed_at") or self.job.get("created_at") or 0
        position = details.get("position", 0)
        return (created, batch_ulid(created, position, self.job["id"], custom_id, "turn"),
                batch_ulid(created, position, self.job["id"], custom_id, "thread"))

    def turn(self, custom_id: str, details: dict[str, Any], body: dict[str, Any],
             ids: tuple[float, str, str] | None = None) -> LoggedTurn:
        """The answer as a finished llm response; ``ids``: what ``self.ids`` gives for it, if known already."""
        options_key = json.dumps(details["options"], sort_keys=True)
        if options_key not in self.options:
            self.options[options_key] = self.model.Options(**details["options"])
        attachments = [stored_attachment(a) for a in details["attachments"]]
        prompt = llm.Prompt(details["prompt"], self.model, system=details["system"], attachments=attachments,
                            schema=self.schema, options=self.options[options_key])
        response = llm.Response(prompt, self.model, stream=False)
        decoder = ReplyDecoder("Mistral's API (batch)")
        for event in decoder.events((body,)):
            response._process_chunk(event)
        for event in decoder.finish(response, self.record["api_model"]):
            response._process_chunk(event)
        response.response_json = {**(response.response_json or {}), "batch_job": self.job["id"], "custom_id": custom_id}
        created, response.id, thread_id = ids or self.ids(custom_id, details, body)
        response._start_utcnow = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
        response._done = True
        return LoggedTurn(response, response.id, thread_id)

    def read(self, results: Iterator[BatchResult], details: RequestDetails, summary: Summary, emit: Emit) -> None:
        chunk: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for result in results:
            if result.custom_id is not None:
                summary.seen.add(result.custom_id)
            request = details.get(result.custom_id)
            if result.error or not request:
                error = result.error or f"{result.where}: custom_id {result.custom_id!r} is not one of this job's requests"
                summary.fail(result.custom_id, error)
                if emit:
                    emit({"custom_id": result.custom_id, "error": error})
                continue
            chunk.append((result.custom_id or "", request, result.body or {}))
            if len(chunk) >= CHUNK:
                self.take(chunk, summary, emit)
                chunk = []
        self.take(chunk, summary, emit)

    def take(self, chunk: list[tuple[str, dict[str, Any], dict[str, Any]]], summary: Summary, emit: Emit) -> None:
        """Log the answers of ``chunk`` not logged yet (answers already logged are not even built, unless printed)."""
        item_ids = [self.ids(*item) for item in chunk]  # two ULIDs each: computed once
        logged = self.writer.existing_turns([ids[1] for ids in item_ids]) if self.writer else set()
        fresh: list[LoggedTurn] = []
        for (custom_id, request, body), ids in zip(chunk, item_ids):
            if ids[1] in logged and not emit:
                summary.already += 1
                continue
            try:
                turn = self.turn(custom_id, request, body, ids)
            except MistralSuiteError as failure:
                summary.fail(custom_id, failure.message)
                if emit:
                    emit({"custom_id": custom_id, "error": failure.message})
                continue
            if emit:
                emit({"custom_id": custom_id, "text": turn.response.text()})
            if turn.turn_id in logged:
                summary.already += 1
            else:
                fresh.append(turn)
        if self.writer:
            self.writer.write(fresh)
        summary.written += len(fresh)


class EmbeddingResults(JobResults):
    """Vectors of an embedding job stored in the collection, exactly as ``llm embed-multi`` stores them (content
    hash, metadata, the content itself with --store); vectors already stored with the same content are left be."""

    def __init__(self, job: dict[str, Any], record: dict[str, Any], db: Any) -> None:
        from llm import Collection

        self.job, self.record, self.db = job, record, db
        self.model = known_model(llm.get_embedding_model, record["model"])
        self.collection = None
        if db is not None:
            self.collection = Collection(record["collection"], db, model_id=self.model.model_id)
            holds = db["collections"].get(self.collection.id)["model"]
            if holds != self.model.model_id:
                raise MistralSuiteError(
                    f"Collection {record['collection']!r} holds {holds} embeddings; these are "
                    f"{self.model.model_id} ones. Store them in another database (-d PATH)."
                )

    def read(self, results: Iterator[BatchResult], details: RequestDetails, summary: Summary, emit: Emit) -> None:
        rows: list[dict[str, Any]] = []
        for result in results:
            if result.custom_id is not None:
                summary.seen.add(result.custom_id)
            request = details.get(result.custom_id)
            items = (request or {}).get("items") or []
            error = result.error or (None if request else f"{result.where}: custom_id {result.custom_id!r} is not "
                                                           "one of this job's requests")
            vectors: list[Any] = []  # each the stored bytes, or a list of floats
            if error is None:
                vectors, error = self.vectors(result.body or {}, len(items))
            if error is not None:
                names = ", ".join(repr(item[0]) for item in items[:3]) + (", ..." if len(items) > 3 else "")
                summary.fail(result.custom_id, f"{error}" + (f" (items {names})" if names else ""))
                if emit:
                    emit({"custom_id": result.custom_id, "ids": [item[0] for item in items], "error": error})
                continue
            for (item_id, content_hash, content, metadata), vector in zip(items, vectors):
                blob = vector if vector.__class__ is bytes else llm.encode(vector)
                if emit:
                    emit({"id": item_id, "embedding": list(llm.decode(blob))})
                rows.append({
                    "collection_id": self.collection.id if self.collection else None, "id": item_id,
                    "embedding": blob, "content": content, "content_blob": None,
                    "content_hash": bytes.fromhex(content_hash), "metadata": json.dumps(metadata) if metadata else None,
                    "updated": int(time.time()),
                })
            if len(rows) >= CHUNK:
                self._write(rows, summary)
                rows = []
        self._write(rows, summary)

    def vectors(self, body: dict[str, Any], count: int) -> tuple[list[Any], Optional[str]]:
        """The vectors of one answer in input order, each as the bytes to store (from base64) or a list of floats,
        or what is wrong with them."""
        try:
            data = sorted(enumerate(body["data"]), key=lambda pair: pair[1].get("index", pair[0]))
            vectors = [row["embedding"] for _, row in data]
        except (KeyError, TypeError, AttributeError):
            return [], "the answer holds no embeddings"
        if len(vectors) != count:
            return [], f"the answer holds {len(vectors)} embeddings for {count} inputs"
        blobs: list[Any] = []
        for vector in vectors:  # base64 float32 (what lines ask for) or, from jobs of earlier versions, floats
            if vector.__class__ is str:
                try:
                    vector = binascii.a2b_base64(vector)  # little-endian float32: the bytes llm.encode makes
                except (binascii.Error, ValueError):
                    pass
            blobs.append(vector)
        sizes = [len(v) // 4 if v.__class__ is bytes and len(v) % 4 == 0 else len(v) if isinstance(v, list) else 0
                 for v in blobs]
        expected = self.model.dimensions or (sizes[0] if sizes else 0)
        if any(not size or size != expected for size in sizes):
            return [], f"the answer holds vectors that are not {expected}-dimension ones ({self.model.model_id})"
        return blobs, None

    def _write(self, rows: list[dict[str, Any]], summary: Summary) -> None:
        if self.db is None or not rows:
            summary.written += len(rows) if self.db is None else 0
            return
        placeholders = ",".join("?" * len(rows))
        stored = {
            (row[0], bytes(row[1]))
            for row in self.db.execute(
                f"select id, content_hash from embeddings where collection_id = ? and id in ({placeholders})",
                [self.collection.id, *(row["id"] for row in rows)],
            ).fetchall()
            if row[1] is not None
        }
        fresh = [row for row in rows if (row["id"], row["content_hash"]) not in stored]
        self.db["embeddings"].insert_all(fresh, replace=True)
        summary.written += len(fresh)
        summary.already += len(rows) - len(fresh)
