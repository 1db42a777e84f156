"""A small fake of Mistral's HTTP API on loopback, for offline tests and benchmarks (stdlib only)."""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import functools
import hashlib
import hmac
import html
import json
import math
import mimetypes
import random
import re
import socket
import socketserver
import string
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

from media_files import ImageInfo, PdfImage, PdfPage, audio_info, data_uri, image_info, read_pdf, wav_bytes

SSE_TYPE = "text/event-stream; charset=utf-8"
RETIRED = frozenset(
    {"open-mistral-7b", "open-mixtral-8x7b", "open-mixtral-8x22b", "open-codestral-mamba", "mistral-tiny"}
)
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_ALNUM = string.ascii_letters + string.digits


def count_tokens(text: str) -> int:
    """The fake's tokenizer, deliberately pessimistic.

    Every word (``\\w+``) and every other non-space character costs ceil(UTF-8 bytes / 4) tokens, at least 1.
    English prose comes out at about 1.3x a ``len(text) / 4`` estimate; punctuation-heavy text and
    non-ASCII text cost more (``"!!!!"`` is 4 tokens, a CJK character about 0.75). Whitespace is free.
    """
    return sum((len(m.encode()) + 3) // 4 for m in _TOKEN_RE.findall(text))


_WORDS = (
    "the of and to in is was that for on with as by at from this which be are or an it not have had but were "
    "their has its one all also more other some been can into than time first new would these two may retrieval "
    "embedding vector database document search language model tokenizer request latency concurrency benchmark "
    "collection similarity semantic paragraph sentence index query ranking"
).split()


def documents(count: int, tokens: int = 100, seed: int = 0) -> list[str]:
    """``count`` distinct English-like documents of about ``tokens`` tokens each (by ``count_tokens``)."""
    rng = random.Random(seed)
    docs = []
    for number in range(count):
        words = [f"Document {number}:"]
        total = count_tokens(words[0]) + 1  # the final "."; counts add up across spaces
        while total < tokens:
            words.append(rng.choice(_WORDS))
            total += count_tokens(words[-1])
        docs.append(" ".join(words) + ".")
    return docs


# --- replies -------------------------------------------------------------------------------------


@dataclass
class Upload:
    """A file part of a multipart/form-data request."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class Recorded:
    method: str
    path: str  # as sent, query string included
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    raw: bytes
    form: dict[str, list[str]] = field(default_factory=dict)  # form fields (multipart or urlencoded); "x[]" as "x"
    files: dict[str, Upload] = field(default_factory=dict)  # multipart file fields
    sent_form: dict[str, list[str]] = field(default_factory=dict)  # the form fields under the names sent ("x[]" kept)

    @property
    def route(self) -> str:
        """The path without query string and trailing slash."""
        return self.path.split("?")[0].rstrip("/")

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def form_value(self, name: str) -> str | None:
        """The last value of a form field, or None."""
        values = self.form.get(name)
        return values[-1] if values else None


@dataclass
class JSONReply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SSEReply:
    """``data: <json>`` events (a str is sent as the raw data payload; an ``(name, data)`` pair is sent as
    ``event: <name>`` + ``data: <json>``), then ``data: [DONE]`` if ``done``.

    Normal streams use chunked encoding (keep-alive). With ``cut_after=N`` (N counts events, [DONE]
    included) or ``reset=True`` the body is close-delimited (``Connection: close``): after N events (or all
    of them) the server closes the socket (FIN), or resets it (RST, SO_LINGER 0) when ``reset``.
    ``event_delay`` is slept before each event.
    """

    events: list[Union[dict, str, tuple[str, Any]]]
    done: bool = True
    cut_after: int | None = None
    event_delay: float = 0.0
    status: int = 200
    reset: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RawReply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ResetReply:
    """Read the request, then reset the TCP connection without answering."""


@dataclass
class FileReply:
    """Replay a recorded body byte for byte (content type from the suffix: .sse or JSON)."""

    path: str | Path
    content_type: str | None = None


Reply = Union[JSONReply, SSEReply, RawReply, ResetReply, FileReply]


def _sse_event(event: Union[dict, str, tuple[str, Any]]) -> str:
    if isinstance(event, tuple):
        name, data = event
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"
    return f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"


_ERROR_CODES = {400: "3210", 429: "3505"}


def error_reply(
    status: int,
    message: Any,
    retry_after: float | None = None,
    *,
    type: str = "invalid_request_error",
    code: Any = None,
) -> JSONReply:
    """A Mistral-style error body (code defaults to "3210" for 400, "3505" for 429, else null);
    a ``Retry-After`` header when ``retry_after`` is given."""
    code = code or _ERROR_CODES.get(status)
    body = {"object": "error", "message": message, "type": type, "param": None, "code": code}
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return JSONReply(body, status, headers)


def validation_error(loc: list, msg: str, type: str = "value_error", input: Any = None) -> JSONReply:
    """A 422 in the shape of the service's request validation (FastAPI): ``{"detail": [{type, loc, msg, input}]}``."""
    return JSONReply({"detail": [{"type": type, "loc": loc, "msg": msg, "input": input}]}, 422)


def model_not_found(model: str, router: str) -> JSONReply:
    """The service's answer to a model that does not serve this endpoint (seen on /v1/ocr)."""
    message = f"The model `{model}` does not exist for router `{router}`."
    return error_reply(404, message, type="model_not_found", code="3040")


def _usage(usage: dict | None, completion_tokens: int) -> dict:
    return usage or {
        "prompt_tokens": 10, "total_tokens": 10 + completion_tokens, "completion_tokens": completion_tokens,
    }


def chat_stream_events(
    text_pieces: list[str],
    model: str = "mistral-large-2512",
    finish_reason: str = "stop",
    usage: dict | None = None,
    *,
    tool_calls: list[dict] | None = None,
) -> list[dict]:
    """Chunks like the real service: role chunk, text chunks (with a ``p`` padding key), and a last chunk
    carrying the last text piece (and ``tool_calls``), ``finish_reason`` and ``usage``."""
    head = {"id": uuid.uuid4().hex, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    middle, last = text_pieces[:-1], (text_pieces[-1] if text_pieces else "")
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}, p="abcdefgh"[: len(piece) + 1]) for piece in middle]
    final: dict = {"tool_calls": tool_calls} if tool_calls and not last else {"content": last}
    if tool_calls and last:
        final["tool_calls"] = tool_calls
    events.append(chunk(final, finish_reason, usage=_usage(usage, max(1, len(text_pieces)))))
    return events


def chat_completion(
    content: Any,
    model: str = "mistral-large-2512",
    finish_reason: str = "stop",
    usage: dict | None = None,
    *,
    tool_calls: list[dict] | None = None,
) -> dict:
    """A non-streamed chat completion body."""
    usage = _usage(usage, max(1, count_tokens(content) if isinstance(content, str) else 1))
    return {
        "id": uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "tool_calls": tool_calls},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 0}},
    }


# --- models --------------------------------------------------------------------------------------

_CAPABILITIES = (
    "completion_chat", "completion_fim", "function_calling", "fine_tuning", "vision", "ocr",
    "classification", "moderation", "audio", "audio_transcription", "reasoning",
)  # fmt: skip


def model_card(
    id: str,
    *caps: str,
    aliases: tuple[str, ...] = (),
    max_context_length: int = 262144,
    deprecation: str | None = None,
    replacement: str | None = None,
    temperature: float | None = 0.3,
    description: str = "",
    **extra: Any,
) -> dict:
    """A /v1/models card in the real shape; ``caps`` are the capabilities that are true."""
    return {
        "id": id, "object": "model", "created": 1767225600, "owned_by": "mistralai",
        "name": id, "description": description or f"Fake card for {id}",
        "max_context_length": max_context_length, "aliases": list(aliases),
        "deprecation": deprecation, "deprecation_replacement_model": replacement,
        "default_model_temperature": temperature, "type": "base",
        "capabilities": {c: c in caps for c in _CAPABILITIES},
        **extra,
    }  # fmt: skip


DEFAULT_MODELS: list[dict] = [
    model_card("mistral-large-2512", "completion_chat", "function_calling", "vision",
               aliases=("mistral-large-latest",), temperature=0.7),
    model_card("mistral-large-latest", "completion_chat", "function_calling", "vision",
               aliases=("mistral-large-2512",), temperature=0.7),
    model_card("pixtral-large-2411", "completion_chat", "function_calling", "vision",
               aliases=("pixtral-large-latest",), max_context_length=131072, temperature=0.7,
               deprecation="2026-12-31T12:00:00Z", replacement="mistral-large-2512"),
    model_card("ft:open-mistral-7b:abc123:20240101:xyz", "completion_chat", "function_calling", "fine_tuning",
               max_context_length=32768, temperature=None, type="fine-tuned", owned_by="abc123",
               job="0d5a8b3e-2f4c-4e7b-9a1d-6c3f5e8b2a10", root="open-mistral-7b", archived=False),
    model_card("mistral-new-2611", "completion_chat", "function_calling", description="A model no catalog knows yet"),
    model_card("codestral-2508", "completion_chat", "completion_fim", "function_calling",
               aliases=("codestral-latest",), max_context_length=131072),
    model_card("mistral-embed", max_context_length=8192, temperature=None),
]  # fmt: skip


# --- documents, audio, files and batches ----------------------------------------------------------

OCR_MODELS = frozenset({"mistral-ocr-latest", "mistral-ocr-2512", "mistral-ocr-2505"})
TRANSCRIPTION_MODELS = frozenset(
    {"voxtral-mini-latest", "voxtral-mini-2507", "voxtral-mini-transcribe-2507", "voxtral-small-latest",
     "voxtral-small-2507"}
)  # fmt: skip
SPEECH_MODELS = frozenset({"voxtral-mini-tts-latest", "voxtral-mini-tts-2603"})
FILE_PURPOSES = ("fine-tune", "batch", "ocr", "audio")
SPEECH_FORMATS = ("pcm", "wav", "mp3", "flac", "opus")
BATCH_ENDPOINTS = (
    "/v1/chat/completions", "/v1/embeddings", "/v1/fim/completions", "/v1/moderations", "/v1/chat/moderations",
    "/v1/ocr", "/v1/classifications", "/v1/chat/classifications", "/v1/conversations", "/v1/audio/transcriptions",
)  # fmt: skip
BATCH_TERMINAL = frozenset({"SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED"})
OCR_DPI = 200  # page images are reported at 200 dpi: a US Letter page is 1700 x 2200 pixels
_SPOKEN = ("Hello and welcome.", "This is a test recording.", "The weather is fine today.", "Thank you for listening.")
_ID_NAMESPACE = uuid.UUID("6f1d2b0e-5c4a-4f7e-9a3b-2d8c7e6f5a41")
_SIGNING_KEY = b"fake-mistral-signing-key"
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


def voice_card(
    id: str, name: str, languages: list[str], gender: str, *, user_id: str | None = None, **extra: Any
) -> dict:
    """A ``GET /v1/audio/voices`` item (``VoiceResponse``); presets have no ``user_id``."""
    return {
        "id": id, "name": name, "slug": name.lower(), "languages": languages, "gender": gender, "age": None,
        "tags": [], "color": None, "description": f"Fake voice {name}", "retention_notice": 30,
        "created_at": "2026-01-01T00:00:00Z", "user_id": user_id, "trimmed_seconds": None, **extra,
    }  # fmt: skip


DEFAULT_VOICES: list[dict] = [
    voice_card("2f7a1c9e-8b3d-4e6f-a5c2-1d9e8f7a6b01", "Amelie", ["fr", "en"], "female"),
    voice_card("2f7a1c9e-8b3d-4e6f-a5c2-1d9e8f7a6b02", "Oliver", ["en"], "male"),
    voice_card("2f7a1c9e-8b3d-4e6f-a5c2-1d9e8f7a6b03", "Lucia", ["es", "it"], "female"),
    voice_card("2f7a1c9e-8b3d-4e6f-a5c2-1d9e8f7a6b04", "My Clone", ["en"], "male", user_id="user-fake-1"),
]


def _param(header: str, name: str) -> str | None:
    m = re.search(rf'(?:^|;)\s*{name}=(?:"((?:[^"\\]|\\.)*)"|([^;]*))', header)
    return None if m is None else (m[1] if m[1] is not None else m[2].strip())


def parse_multipart(raw: bytes, content_type: str) -> tuple[dict[str, list[str]], dict[str, Upload]]:
    """Text fields and file parts of a multipart/form-data body, under the names sent; ValueError without a boundary."""
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise ValueError("multipart body without boundary")
    form: dict[str, list[str]] = {}
    files: dict[str, Upload] = {}
    for part in raw.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        content = content.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name, filename = _param(disposition, "name"), _param(disposition, "filename")
        if name is None:
            continue
        if filename is not None:
            files[name] = Upload(filename, headers.get("content-type") or "application/octet-stream", content)
        else:
            form.setdefault(name, []).append(content.decode("utf-8", "replace"))
    return form, files


def parse_form(raw: bytes, content_type: str) -> tuple[dict[str, list[str]], dict[str, Upload]]:
    """Text fields and file parts of a multipart or urlencoded body, under the names sent; ValueError for a
    multipart body without a boundary."""
    if content_type.lower().startswith("multipart/form-data"):
        return parse_multipart(raw, content_type)
    return parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True), {}


def spec_names(form: dict[str, list[str]]) -> dict[str, list[str]]:
    """A form's fields under the spec's property names: ``x[]`` (how Mistral's SDK names an array field) as ``x``;
    the fake takes either spelling."""
    named: dict[str, list[str]] = {}
    for name, values in form.items():
        named.setdefault(name.removesuffix("[]"), []).extend(values)
    return named


@dataclass
class StoredFile:
    """A file of the fake's Files API: an upload (``source="upload"``) or a batch result (``"mistral"``)."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    mimetype: str
    sample_type: str
    source: str = "upload"
    expires_at: int | None = None

    def info(self) -> dict:
        """The file in the shape of ``FileSchema``."""
        jsonl = self.filename.endswith(".jsonl") or self.mimetype == "application/jsonl"
        lines = sum(1 for line in self.data.splitlines() if line.strip()) if jsonl else None
        return {
            "id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "sample_type": self.sample_type,
            "source": self.source, "num_lines": lines,
            "mimetype": self.mimetype, "signature": hashlib.sha256(self.data).hexdigest()[:16],
            "expires_at": self.expires_at, "visibility": "workspace",
        }  # fmt: skip


@dataclass
class BatchJobState:
    """A batch job of the fake: its requests (``lines``), their precomputed results, and its progress."""

    id: str
    endpoint: str
    model: str | None
    input_files: list[str]
    metadata: dict | None
    timeout_hours: int
    inline: bool  # created with inline ``requests``: GET shows ``outputs`` once finished
    created_at: int
    lines: list[tuple[Any, Any]]  # (custom_id, body); body is None when the line is not a request object
    results: list[tuple[dict, bool]] = field(default_factory=list)  # (result line, succeeded) per line
    status: str = "QUEUED"
    polls: int = 0  # GETs of this job so far
    done: int = 0  # lines processed (revealed) so far
    started_at: int | None = None
    completed_at: int | None = None
    output_file: str | None = None
    error_file: str | None = None
    errors: list[dict] = field(default_factory=list)

    def view(self, outputs: bool = False) -> dict:
        """The job in the shape of ``BatchJob`` (with ``outputs`` when asked and finished)."""
        succeeded = sum(ok for _, ok in self.results[: self.done])
        job = {
            "id": self.id, "object": "batch", "input_files": self.input_files, "metadata": self.metadata,
            "endpoint": self.endpoint, "model": self.model, "agent_id": None, "output_file": self.output_file,
            "error_file": self.error_file, "errors": self.errors, "status": self.status,
            "created_at": self.created_at, "total_requests": len(self.lines), "completed_requests": self.done,
            "succeeded_requests": succeeded, "failed_requests": self.done - succeeded,
            "started_at": self.started_at, "completed_at": self.completed_at,
        }  # fmt: skip
        if (outputs or self.inline) and self.status in BATCH_TERMINAL:
            job["outputs"] = [line for line, _ in self.results[: self.done]]
        return job


def schema_example(schema: Any, root: dict | None = None, text: str = "text") -> Any:
    """A value of the shape a JSON schema asks for: an object's required properties (all of them when none is
    required) filled with plausible typed values, strings set to ``text``. Follows local ``$ref``s."""
    root = root if root is not None else schema
    if not isinstance(schema, dict):
        return text
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for key in schema["$ref"][2:].split("/"):
            target = target.get(key.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        return schema_example(target, root, text)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(combinator) or [] if not (isinstance(o, dict) and o.get("type") == "null")]
        if options:
            return schema_example(options[0], root, text)
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {
            name: schema_example(properties.get(name, {}), root, text) for name in schema.get("required") or properties
        }
    if kind == "array":
        return [schema_example(schema.get("items", {}), root, text) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(max(1, schema.get("minimum", 1)))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {"date": "2026-01-01", "date-time": "2026-01-01T00:00:00Z"}.get(schema.get("format", ""), text)


def _markdown_table(rows: list[list[str]], fmt: str) -> str:
    if fmt == "html":
        tags = ["th"] + ["td"] * (len(rows) - 1)  # the first row is the header
        cells = ("".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row) for tag, row in zip(tags, rows))
        return "<table>" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table>"
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([lines[0], "|" + " --- |" * len(rows[0]), *lines[1:]])


def _pixels(points: float) -> int:
    return max(0, round(points * OCR_DPI / 72))


def _parse_pages(pages: Any, count: int) -> list[int] | JSONReply:
    """0-based page indexes from OCRRequest.pages (a list of ints or "0,2-4"); an error reply when invalid."""
    if pages is None:
        return list(range(count))
    if isinstance(pages, str):
        indexes = []
        for part in filter(None, (p.strip() for p in pages.split(","))):
            m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
            if not m:
                return validation_error(["body", "pages"], f"Invalid page range: {part!r}", input=pages)
            indexes += range(int(m[1]), int(m[2] or m[1]) + 1)
    elif isinstance(pages, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in pages):
        indexes = list(pages)
    else:
        return validation_error(["body", "pages"], "Input should be a valid list of integers or a string", input=pages)
    if bad := [i for i in indexes if not 0 <= i < count]:
        return error_reply(400, f"Page index {bad[0]} is out of range: the document has {count} pages.")
    return list(dict.fromkeys(indexes))


def _batch_line(item: Any) -> tuple[Any, Any]:
    """(custom_id, body) of a batch request line; (None, None) when it is not an object."""
    return (item.get("custom_id"), item.get("body")) if isinstance(item, dict) else (None, None)


def _blob_error(status: int, code: str, message: str) -> RawReply:
    """An error of the blob storage behind signed URLs (Azure's XML shape)."""
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return RawReply(status, body.encode(), {"Content-Type": "application/xml"})


def _speech_audio(fmt: str, seconds: float) -> bytes:
    """Audio of ``seconds`` in ``fmt``: a real WAV (or its raw PCM frames); for mp3, flac and opus the PCM frames
    behind the format's magic bytes (enough for a client to save and sniff, not to play)."""
    wav = wav_bytes(seconds, rate=8000, tone=220.0)
    magic = {"wav": None, "pcm": b"", "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00", "flac": b"fLaC", "opus": b"OggS"}[fmt]
    return wav if magic is None else magic + wav[44:]


# --- the server ----------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """Text of a message content: a string, or the text chunks of a list joined."""
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
    return content if isinstance(content, str) else ""


def _dated(model: str) -> str:
    return model[: -len("latest")] + "2512" if model.endswith("-latest") else model


@functools.lru_cache(maxsize=4096)
def _vector(text: str, dims: int) -> tuple[float, ...]:
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    v = [rng.random() - 0.5 for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return tuple(round(x / norm, 6) for x in v)


@functools.lru_cache(maxsize=4096)
def _vector_base64(text: str, dims: int) -> str:
    """``_vector`` as ``encoding_format: base64`` sends it: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{dims}f", *_vector(text, dims))).decode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeMistral

    def server_bind(self) -> None:  # skips HTTPServer's socket.getfqdn(), a reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that went away (or stop()) is no error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle/delayed-ACK stalls
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        super().finish()

    def _any(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        merged = {k.lower(): (k, v) for k, v in headers.items()}  # later names win, case-insensitively
        for name, value in merged.values():
            self.send_header(name, value)
        self.end_headers()

    def reset(self) -> None:
        """Close with SO_LINGER 0: the peer gets a TCP RST."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference so close() really closes the descriptor
        self.connection.close()

    def send_reply(self, reply: Reply) -> None:
        if isinstance(reply, ResetReply):
            return self.reset()
        if isinstance(reply, FileReply):
            path = Path(reply.path)
            ctype = reply.content_type or (SSE_TYPE if path.suffix == ".sse" else "application/json")
            reply = RawReply(200, path.read_bytes(), {"Content-Type": ctype})
        if isinstance(reply, JSONReply):
            body = json.dumps(reply.body).encode()
            reply = RawReply(reply.status, body, {"Content-Type": "application/json", **reply.headers})
        if isinstance(reply, RawReply):
            self._head(reply.status, {"Content-Length": str(len(reply.body)), **reply.headers})
            self.wfile.write(reply.body)
            return
        cut = reply.cut_after is not None or reply.reset
        framing = {"Connection": "close"} if cut else {"Transfer-Encoding": "chunked"}
        self._head(reply.status, {"Content-Type": SSE_TYPE, "Cache-Control": "no-cache", **framing, **reply.headers})
        events = [_sse_event(e) for e in reply.events] + ["data: [DONE]\n\n"] * reply.done
        for event in events[: reply.cut_after]:
            if reply.event_delay:
                time.sleep(reply.event_delay)
            chunk = event.encode()
            self.wfile.write(chunk if cut else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if reply.reset:
            self.reset()
        elif not cut:
            self.wfile.write(b"0\r\n\r\n")


class FakeMistral:
    """Threaded HTTP server on 127.0.0.1 (port 0 → free port), run in a daemon thread."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        port: int = 0,
        host: str = "127.0.0.1",
        max_inputs: int = 512,
        max_tokens_per_request: int = 16384,
        max_tokens_per_input: int = 8192,
        min_interval: float = 0.0,
        max_upload_bytes: int = 512 * 1024 * 1024,
        batch_polls: int = 2,
    ) -> None:
        self.latency = latency
        # A rate limit: a request arriving less than min_interval s after the last one let through gets a 429
        # with Retry-After (the time left); scripted replies are not limited. rate_limited counts the 429s.
        self.min_interval = min_interval
        self.rate_limited = 0
        self._last_allowed = float("-inf")
        self.host, self.port = host, port
        self.max_inputs = max_inputs
        self.max_tokens_per_request = max_tokens_per_request
        self.max_tokens_per_input = max_tokens_per_input
        self.models: list[dict] = copy.deepcopy(DEFAULT_MODELS)
        self.encoding_formats = {"float", "base64"}  # /v1/embeddings answers others with a 422
        self.requests: list[Recorded] = []
        self.max_concurrency_seen = 0
        self.embedding_requests = 0
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._active = 0
        self._tool_calls = 0
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        # Documents, audio, files and batches. Uploads over max_upload_bytes get a 413 (the service takes 512 MB).
        self.max_upload_bytes = max_upload_bytes
        self.ocr_models, self.transcription_models, self.speech_models = OCR_MODELS, TRANSCRIPTION_MODELS, SPEECH_MODELS
        self.voices: list[dict] = copy.deepcopy(DEFAULT_VOICES)
        self.files: dict[str, StoredFile] = {}  # the Files API's store: uploads and batch results, by id
        self.upload_count = 0  # POST /v1/files that stored a file
        self.delete_count = 0  # DELETE /v1/files/{id} that removed one
        self.hosted: dict[str, tuple[bytes, str]] = {}  # name -> (bytes, content type), served at /hosted/<name>
        # A batch job finishes on its batch_polls-th GET (QUEUED when created, RUNNING before; 0: done at creation)
        # with batch_final_status (SUCCESS, FAILED or TIMEOUT_EXCEEDED); requests whose custom_id is in
        # batch_fail_ids fail into the error file. A job not finished timeout_hours after creation (by clock)
        # ends TIMEOUT_EXCEEDED.
        self.batch_polls = batch_polls
        self.batch_final_status = "SUCCESS"
        self.batch_fail_ids: set[str] = set()
        self.batch_jobs: dict[str, BatchJobState] = {}
        self.clock: Callable[[], float] = time.time  # file and job timestamps, signed URL and job expiry
        self._ids = 0
        self._batch_lock = threading.Lock()  # job progress; taken before _lock, never inside it
        self._route_table = self._routes()

    # lifecycle

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeMistral is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeMistral:
        self._httpd = _Server((self.host, self.port), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-mistral", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # end idle keep-alive connections and streams in progress
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread:
            self._thread.join(timeout=2)

    def __enter__(self) -> FakeMistral:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # scripting

    def queue(self, *replies: Reply) -> None:
        """Scripted replies, consumed FIFO by the next requests (any path) before the default behaviour."""
        with self._lock:
            self._queue.extend(replies)

    def count_tokens(self, text: str) -> int:
        """Token count used for embeddings limits and usage; assign another callable to change it."""
        return count_tokens(text)

    @property
    def root_url(self) -> str:
        """``http://host:port``, the root of the fake's own (unauthenticated) file URLs."""
        return self.base_url.removesuffix("/v1")

    def host_file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve ``data`` at a URL of the fake (``/hosted/<name>``, no key needed) and return that URL: a document
        or audio URL that /v1/ocr, chat and transcriptions can read. Any URL not served by the fake counts as
        unreachable."""
        with self._lock:
            self.hosted[name] = (data, content_type)
        return f"{self.root_url}/hosted/{quote(name)}"

    @property
    def uploads(self) -> list[StoredFile]:
        """Files uploaded through POST /v1/files and not deleted yet."""
        with self._lock:
            return [f for f in self.files.values() if f.source == "upload"]

    # request handling

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _serve(self, h: _Handler) -> None:
        raw = h.read_body()
        headers = {k.lower(): v for k, v in h.headers.items()}
        body, sent_form, files = None, {}, {}
        content_type = headers.get("content-type", "").lower()
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            try:
                sent_form, files = parse_form(raw, headers["content-type"])
            except ValueError:
                pass
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                pass
        rec = Recorded(h.command, h.path, headers, body, raw, spec_names(sent_form), files, sent_form)
        with self._lock:
            self.requests.append(rec)
            reply = self._queue.popleft() if self._queue else None
            if reply is None and self.min_interval:
                now = time.monotonic()
                if (wait := self._last_allowed + self.min_interval - now) > 0:
                    self.rate_limited += 1
                    reply = error_reply(429, "Requests rate limit exceeded", retry_after=round(wait, 3) or 0.001)
                else:
                    self._last_allowed = now
            self.embedding_requests += rec.path.split("?")[0].rstrip("/").endswith("/embeddings")
            self._active += 1
            self.max_concurrency_seen = max(self.max_concurrency_seen, self._active)
        try:
            if self.latency:
                time.sleep(self.latency)
            if reply is None:
                try:
                    reply = self.default_reply(rec)
                except Exception as e:  # a bug in the fake must not hang the client
                    reply = error_reply(500, f"fake server error: {e!r}", type="internal_error")
            h.send_reply(reply)
        except OSError:  # the client went away
            h.close_connection = True
        finally:
            with self._lock:
                self._active -= 1

    def _routes(self) -> list[tuple[str, re.Pattern, str, Callable[..., Reply]]]:
        """(method, path pattern, body kind: json | form | none | public (no key, no body), handler(rec, **groups))."""
        fid, jid = r"(?P<file_id>[^/]+)", r"(?P<job_id>[^/]+)"
        routes: list[tuple[str, str, str, Callable[..., Reply]]] = [
            ("POST", "/v1/chat/completions", "json", lambda rec: self._chat(rec.body)),
            ("POST", "/v1/fim/completions", "json", lambda rec: self._fim(rec.body)),
            ("POST", "/v1/embeddings", "json", lambda rec: self._embeddings(rec.body)),
            ("GET", "/v1/models", "none", lambda rec: JSONReply({"object": "list", "data": self.models})),
            ("POST", "/v1/ocr", "json", lambda rec: self._ocr(rec.body)),
            ("POST", "/v1/audio/transcriptions", "form", self._transcription),
            ("POST", "/v1/audio/speech", "json", lambda rec: self._speech(rec.body)),
            ("GET", "/v1/audio/voices", "none", self._list_voices),
            ("POST", "/v1/files", "form", self._upload),
            ("GET", "/v1/files", "none", self._list_files),
            ("GET", f"/v1/files/{fid}", "none", self._get_file),
            ("DELETE", f"/v1/files/{fid}", "none", self._delete_file),
            ("GET", f"/v1/files/{fid}/content", "none", self._file_content),
            ("GET", f"/v1/files/{fid}/url", "none", self._signed_url),
            ("POST", "/v1/batch/jobs", "json", lambda rec: self._create_batch(rec.body)),
            ("GET", "/v1/batch/jobs", "none", self._list_batches),
            ("GET", f"/v1/batch/jobs/{jid}", "none", self._get_batch),
            ("DELETE", f"/v1/batch/jobs/{jid}", "none", self._delete_batch),
            ("POST", f"/v1/batch/jobs/{jid}/cancel", "none", self._cancel_batch),
            ("GET", f"/signed/{fid}/[^/]*", "public", self._serve_signed),
            ("GET", "/hosted/(?P<name>.+)", "public", self._serve_hosted),
        ]
        return [(method, re.compile(pattern), kind, handler) for method, pattern, kind, handler in routes]

    def default_reply(self, rec: Recorded) -> Reply:
        matches = [(r, m) for r in self._route_table if (m := r[1].fullmatch(rec.route))]
        route = next(((r, m) for r, m in matches if r[0] == rec.method), None)
        if route is None:
            return JSONReply({"detail": "Method Not Allowed" if matches else "Not Found"}, 405 if matches else 404)
        (_, _, kind, handler), match = route
        groups = {k: unquote(v) for k, v in match.groupdict().items()}
        if kind == "public":
            return handler(rec, **groups)
        auth = rec.headers.get("authorization", "")
        if (auth[7:].strip() if auth.startswith("Bearer ") else "") in ("", "bad-key"):
            return JSONReply({"message": "Unauthorized", "request_id": uuid.uuid4().hex}, 401)
        if kind == "json" and not isinstance(rec.body, dict):
            return error_reply(400, "Invalid JSON body")
        for name in ("file_id", "job_id"):
            if name in groups and not _UUID_RE.fullmatch(groups[name]):
                return validation_error(["path", name], "Input should be a valid UUID", "uuid_parsing", groups[name])
        return handler(rec, **groups)

    def _new_id(self, kind: str) -> str:
        """A deterministic UUID: the n-th id this fake hands out."""
        with self._lock:
            self._ids += 1
            return str(uuid.uuid5(_ID_NAMESPACE, f"{kind}-{self._ids}"))

    def _retired(self, model: str) -> Reply | None:
        if model in RETIRED:
            return error_reply(404, f"Invalid model: {model}", type="invalid_model", code="1500")
        return None

    def _completion(self, req: dict, text: str, prompt_tokens: int, tool_calls: list[dict] | None = None) -> Reply:
        model, finish = _dated(str(req.get("model", ""))), "tool_calls" if tool_calls else "stop"
        out = max(1, self.count_tokens(text))
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + out, "completion_tokens": out}
        if req.get("stream"):
            pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
            return SSEReply(chat_stream_events(pieces, model, finish, usage, tool_calls=tool_calls))
        if tool_calls:
            tool_calls = [{"id": c["id"], "type": "function", **c} for c in tool_calls]
        return JSONReply(chat_completion(text, model, finish, usage, tool_calls=tool_calls))

    def _chat(self, req: dict) -> Reply:
        model = str(req.get("model", ""))
        if error := self._retired(model):
            return error
        messages = [m for m in req.get("messages") or [] if isinstance(m, dict)]
        if not messages:
            return error_reply(400, "Conversation must have at least one message")
        prompt_tokens = sum(4 + self.count_tokens(_text(m.get("content"))) for m in messages)
        last, tools = messages[-1], req.get("tools") or []
        if last.get("role") == "tool":
            return self._completion(req, "tool said: " + _text(last.get("content")), prompt_tokens)
        user_message = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        user, notes = _text(user_message.get("content")), []
        for m in messages:  # documents (and image URLs of the fake) must be readable; the user's last ones are echoed
            for chunk in m.get("content") if isinstance(m.get("content"), list) else []:
                note = self._attachment_note(chunk)
                if isinstance(note, JSONReply):
                    return note
                if note and m is user_message:
                    notes.append(note)
        if tools and last.get("role") == "user" and re.search(r"\btool", user, re.IGNORECASE):
            with self._lock:
                self._tool_calls += 1
                digest = hashlib.sha256(f"call-{self._tool_calls}".encode()).digest()
            call_id = "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:9])
            name = tools[0].get("function", {}).get("name", "")
            call = {"id": call_id, "function": {"name": name, "arguments": "{}"}, "index": 0}
            return self._completion(req, "", prompt_tokens, tool_calls=[call])
        return self._completion(req, "echo: " + user + "".join(notes), prompt_tokens)

    def _fim(self, req: dict) -> Reply:
        if error := self._retired(str(req.get("model", ""))):
            return error
        prompt, suffix = str(req.get("prompt") or ""), str(req.get("suffix") or "")
        return self._completion(req, f"MIDDLE({len(prompt)},{len(suffix)})", self.count_tokens(prompt + suffix))

    def _embeddings(self, req: dict) -> Reply:
        model, inputs = str(req.get("model", "")), req.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            return error_reply(400, "input must be a string or a non-empty list of strings")
        if len(inputs) > self.max_inputs:
            return error_reply(400, "Too many inputs in request, split into more batches.")
        counts = [self.count_tokens(t) for t in inputs]
        for i, (text, n) in enumerate(zip(inputs, counts)):
            if not text.strip():
                return error_reply(400, f"Input id {i} is empty.")
            if n > (limit := self.max_tokens_per_input):
                return error_reply(400, f"Input id {i} has {n} tokens, exceeding max {limit} tokens.")
        if (total := sum(counts)) > (limit := self.max_tokens_per_request):
            return error_reply(400, f"Too many tokens in batch. Max is {limit} got {total}")
        dims = 1024
        if model.startswith("codestral-embed"):
            dims = req.get("output_dimension") or 1536
            if not isinstance(dims, int) or not 1 <= dims <= 3072:
                return error_reply(400, "output_dimension must be an integer between 1 and 3072")
        encoding = req.get("encoding_format", "float")
        if encoding not in self.encoding_formats:
            allowed = " or ".join(repr(e) for e in sorted(self.encoding_formats))
            return validation_error(["body", "encoding_format"], f"Input should be {allowed}", "enum", encoding)
        vector = _vector_base64 if encoding == "base64" else _vector
        data = [{"object": "embedding", "embedding": vector(t, dims), "index": i} for i, t in enumerate(inputs)]
        usage = {"prompt_tokens": total, "total_tokens": total}
        return JSONReply({"id": uuid.uuid4().hex, "object": "list", "data": data, "model": model, "usage": usage})

    # documents and audio

    def _stored(self, file_id: str) -> StoredFile | JSONReply:
        with self._lock:
            stored = self.files.get(file_id)
        return stored if stored is not None else error_reply(404, f"File {file_id} not found")

    def _fetch(self, url: str) -> bytes | JSONReply:
        """The bytes of a ``data:`` URI or of a URL the fake serves itself (hosted or signed); an error reply for
        a broken data URI and for any other URL (the fake reaches no network: every other URL is unreachable)."""
        if url.startswith("data:"):
            head, sep, payload = url.partition(",")
            if not sep or not head.endswith(";base64"):
                return error_reply(400, "Invalid data URI: expected data:<media type>;base64,<data>")
            try:
                return base64.b64decode(payload, validate=True)
            except ValueError:
                return error_reply(400, "Invalid data URI: the data is not valid base64")
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc == f"{self.host}:{self.port}":
            reply = self.default_reply(
                Recorded("GET", url[url.index(parts.netloc) + len(parts.netloc) :], {}, None, b"")
            )
            if isinstance(reply, RawReply) and reply.status == 200:
                return reply.body
        return error_reply(400, f"Failed to download the file from {url}")

    def _load_document(self, chunk: dict) -> tuple[str, bytes] | JSONReply:
        """(name, bytes) of a document given as a ``file``, ``document_url`` or ``image_url`` chunk."""
        if "file_id" in chunk:
            stored = self._stored(str(chunk["file_id"]))
            return stored if isinstance(stored, JSONReply) else (stored.filename, stored.data)
        url = chunk.get("document_url", chunk.get("image_url"))
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
            message = (
                "Value error, Document content must be a URL (starting with 'https') or base64 encoded document "
                f"(starting with 'data:application/<format>;base64,<document-base64>')Received: {str(url)[:64]}"
            )
            return validation_error(["body"], message, input=chunk)
        data = self._fetch(url)
        if isinstance(data, JSONReply):
            return data
        name = chunk.get("document_name") or (
            unquote(urlsplit(url).path.rsplit("/", 1)[-1]) if url[:4] == "http" else ""
        )
        return name or "document", data

    @staticmethod
    def _read_document(data: bytes) -> list[PdfPage] | ImageInfo | JSONReply:
        """The pages of a PDF, or the image, in ``data``; the service's error for anything else."""
        if info := image_info(data):
            return info
        try:
            return read_pdf(data)
        except ValueError:
            return error_reply(400, "Document is not a valid PDF.", type="document_parser_invalid_file", code="3740")

    def _attachment_note(self, chunk: Any) -> str | JSONReply | None:
        """A chat content chunk's document, as a note for the echo (" [document NAME: N pages]"); an error
        reply when a document, or an image URL served by the fake, cannot be read; None for other chunks."""
        if not isinstance(chunk, dict) or chunk.get("type") not in ("document_url", "file", "image_url"):
            return None
        if chunk["type"] == "image_url":
            url = chunk.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            fetched = self._fetch(url) if isinstance(url, str) and url.startswith(self.root_url) else None
            return fetched if isinstance(fetched, JSONReply) else None
        loaded = self._load_document(chunk)
        if isinstance(loaded, JSONReply):
            return loaded
        doc = self._read_document(loaded[1])
        if isinstance(doc, JSONReply):
            return doc
        return f" [document {loaded[0]}: {len(doc) if isinstance(doc, list) else 1} pages]"

    def _ocr(self, req: dict) -> Reply:
        model, document = req.get("model"), req.get("document")
        if not isinstance(model, str):
            return validation_error(["body", "model"], "Field required", "missing")
        if not isinstance(document, dict):
            return validation_error(["body", "document"], "Field required", "missing")
        if model not in self.ocr_models:
            return model_not_found(model, "ocr")
        schemas = {}
        for key in ("document_annotation_format", "bbox_annotation_format"):
            if (fmt := req.get(key)) is None:
                continue
            schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt, dict) else None
            if not isinstance(schema, dict) or fmt.get("type") != "json_schema":
                return error_reply(400, f"{key}: only json_schema is valid for this field")
            schemas[key] = schema
        if req.get("document_annotation_prompt") and "document_annotation_format" not in schemas:
            return error_reply(400, "document_annotation_prompt requires a document_annotation_format")
        loaded = self._load_document(document)
        if isinstance(loaded, JSONReply):
            return loaded
        doc = self._read_document(loaded[1])
        if isinstance(doc, JSONReply):
            return doc
        pages = doc if isinstance(doc, list) else [doc]
        indexes = _parse_pages(req.get("pages"), len(pages))
        if isinstance(indexes, JSONReply):
            return indexes
        counters = {"img": 0, "tbl": 0}  # image and table ids run through the whole document
        out = [self._ocr_page(i, pages[i], req, schemas.get("bbox_annotation_format"), counters) for i in indexes]
        annotation = None
        if "document_annotation_format" in schemas:
            text = next((ln for p in out for ln in p["markdown"].splitlines() if ln[:1].isalnum()), loaded[0])
            annotation = json.dumps(schema_example(schemas["document_annotation_format"], text=text))
        usage = {"pages_processed": len(out), "doc_size_bytes": len(loaded[1])}
        return JSONReply({"pages": out, "model": _dated(model), "document_annotation": annotation, "usage_info": usage})

    def _ocr_page(
        self, index: int, page: PdfPage | ImageInfo, req: dict, bbox_schema: dict | None, counters: dict[str, int]
    ) -> dict:
        """One OCRPageObject: the page's lines as markdown paragraphs, rows with " | " as tables, images as
        ``![img-N.jpeg](img-N.jpeg)``; header and footer lines moved out when asked."""
        result: dict = {"index": index, "markdown": "", "images": [], "tables": [], "hyperlinks": [], "header": None,
                        "footer": None}  # fmt: skip
        if isinstance(page, ImageInfo):
            return {
                **result,
                "markdown": page.text,
                "dimensions": {"dpi": OCR_DPI, "height": page.height, "width": page.width},
            }
        table_format = req.get("table_format")
        blocks: list[str] = []
        rows: list[list[str]] = []

        def flush_table() -> None:
            if rows and table_format in ("markdown", "html"):
                table_id = f"tbl-{counters['tbl']}.{'md' if table_format == 'markdown' else 'html'}"
                counters["tbl"] += 1
                result["tables"].append(
                    {"id": table_id, "content": _markdown_table(rows, table_format), "format": table_format}
                )
                blocks.append(f"[{table_id}]({table_id})")
            elif rows:
                blocks.append(_markdown_table(rows, "markdown"))
            rows.clear()

        for item in page.content:
            if isinstance(item, PdfImage):
                flush_table()
                image_id = f"img-{counters['img']}.jpeg"
                counters["img"] += 1
                blocks.append(f"![{image_id}]({image_id})")
                top = page.height - item.y - item.height
                encoded = data_uri(item.data, item.mime) if req.get("include_image_base64") and item.data else None
                annotation = json.dumps(schema_example(bbox_schema, text=f"Image {image_id}")) if bbox_schema else None
                result["images"].append({
                    "id": image_id, "top_left_x": _pixels(item.x), "top_left_y": _pixels(top),
                    "bottom_right_x": _pixels(item.x + item.width), "bottom_right_y": _pixels(top + item.height),
                    "image_base64": encoded, "image_annotation": annotation,
                })  # fmt: skip
            elif (margin := page.margin(item)) and req.get(f"extract_{margin}"):
                result[margin] = f"{result[margin]} {item.text}" if result[margin] else item.text
            elif " | " in item.text:
                rows.append([cell.strip() for cell in item.text.split("|")])
            else:
                flush_table()
                blocks.append(item.text)
        flush_table()
        result["markdown"] = "\n\n".join(blocks)
        return {**result, "dimensions": {"dpi": OCR_DPI, "height": _pixels(page.height), "width": _pixels(page.width)}}

    def _transcription(self, rec: Recorded) -> Reply:
        model = rec.form_value("model")
        if not model:
            return validation_error(["body", "model"], "Field required", "missing")
        flags = {}
        for name in ("stream", "diarize"):
            value = (rec.form_value(name) or "false").lower()
            if value not in ("true", "false", "1", "0"):
                return validation_error(["body", name], "Input should be a valid boolean", "bool_parsing", value)
            flags[name] = value in ("true", "1")
        language = rec.form_value("language")
        if language is not None and not re.fullmatch(r"\w{2}", language):
            message = "String should match pattern '^\\w{2}$'"
            return validation_error(["body", "language"], message, "string_pattern_mismatch", language)
        temperature = rec.form_value("temperature")
        if temperature is not None and not re.fullmatch(r"-?\d+(\.\d*)?|-?\.\d+", temperature):
            return validation_error(
                ["body", "temperature"], "Input should be a valid number", "float_parsing", temperature
            )
        granularities = rec.form.get("timestamp_granularities", [])
        if bad := [g for g in granularities if g not in ("segment", "word")]:
            return validation_error(
                ["body", "timestamp_granularities"], "Input should be 'segment' or 'word'", "enum", bad[0]
            )
        sources = [name for name in ("file", "file_url", "file_id") if name in rec.files or rec.form_value(name)]
        if len(sources) != 1:
            return validation_error(
                ["body"], "Value error, exactly one of file, file_url or file_id must be given", input=sources
            )
        if model not in self.transcription_models:
            return model_not_found(model, "transcription")
        if sources == ["file"]:
            data: bytes | JSONReply = rec.files["file"].data
        elif sources == ["file_url"]:
            data = self._fetch(rec.form_value("file_url") or "")
        else:
            stored = self._stored(rec.form_value("file_id") or "")
            data = stored if isinstance(stored, JSONReply) else stored.data
        if isinstance(data, JSONReply):
            return data
        audio = audio_info(data)
        if audio is None:
            return error_reply(400, "The file could not be decoded as audio (supported: wav, mp3, flac, ogg, m4a).")
        return self._transcript(_dated(model), audio.seconds, language or "en", granularities, **flags)

    def _transcript(
        self, model: str, seconds: float, language: str, granularities: list[str], *, stream: bool, diarize: bool
    ) -> Reply:
        """A deterministic transcript: one phrase of _SPOKEN per started second of audio, as one segment, or
        split into words with evenly shared times; segments are listed when asked for (or when diarizing)."""
        base, groups = [], []  # the phrases, and the segments reported for each
        for i in range(max(1, math.ceil(seconds))):
            start, end = float(i), round(min(i + 1.0, seconds), 3)
            phrase = {"type": "transcription_segment", "text": _SPOKEN[i % len(_SPOKEN)], "start": start, "end": end}
            if diarize:
                phrase["speaker_id"] = f"speaker_{i % 2 + 1}"
            base.append(phrase)
            if "word" in granularities:
                words = phrase["text"].split()
                step = (end - start) / len(words)
                times = [round(start + k * step, 3) for k in range(len(words) + 1)]
                groups.append([{**phrase, "text": w, "start": t, "end": u} for w, t, u in zip(words, times, times[1:])])
            else:
                groups.append([phrase] if "segment" in granularities or diarize else [])
        text = " ".join(phrase["text"] for phrase in base)
        prompt, completion = math.ceil(seconds * 12.5), max(1, self.count_tokens(text))
        usage = {"prompt_audio_seconds": math.ceil(seconds), "prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}  # fmt: skip
        segments = [segment for group in groups for segment in group]
        result = {"model": model, "text": text, "language": language, "segments": segments, "usage": usage}
        if not stream:
            return JSONReply(result)
        events: list = [("transcription.language", {"type": "transcription.language", "audio_language": language})]
        for i, (phrase, group) in enumerate(zip(base, groups)):
            delta = {"type": "transcription.text.delta", "text": (" " if i else "") + phrase["text"]}
            events.append(("transcription.text.delta", delta))
            for segment in group:
                events.append(("transcription.segment", {**segment, "type": "transcription.segment"}))
        events.append(("transcription.done", {**result, "type": "transcription.done"}))
        return SSEReply(events, done=False)

    def _speech(self, req: dict) -> Reply:
        text, model, fmt = req.get("input"), req.get("model"), req.get("response_format", "mp3")
        if not isinstance(text, str):
            missing = "input" not in req
            message, kind = (
                ("Field required", "missing") if missing else ("Input should be a valid string", "string_type")
            )
            return validation_error(["body", "input"], message, kind, None if missing else text)
        if fmt not in SPEECH_FORMATS:
            message = "Input should be 'pcm', 'wav', 'mp3', 'flac' or 'opus'"
            return validation_error(["body", "response_format"], message, "enum", fmt)
        if model is not None and model not in self.speech_models:
            return model_not_found(str(model), "speech")
        if not text.strip():
            return error_reply(400, "input must not be empty")
        voice_id = req.get("voice_id")
        if voice_id is not None and not any(voice_id in (v.get("id"), v.get("slug")) for v in self.voices):
            return error_reply(404, f"Voice {voice_id} not found")
        seconds = round(max(0.5, 0.4 * len(text.split())), 2)
        audio = _speech_audio(fmt, seconds)
        prompt, completion = self.count_tokens(text), math.ceil(seconds * 12.5)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if not req.get("stream"):
            return JSONReply({"audio_data": base64.b64encode(audio).decode()})
        events: list = []
        for start in range(0, len(audio), 4096):
            chunk = base64.b64encode(audio[start : start + 4096]).decode()
            events.append(("speech.audio.delta", {"type": "speech.audio.delta", "audio_data": chunk}))
        events.append(("speech.audio.done", {"type": "speech.audio.done", "usage": usage}))
        return SSEReply(events, done=False)

    @staticmethod
    def _int_query(
        rec: Recorded, name: str, default: int, low: int | None = None, high: int | None = None
    ) -> int | JSONReply:
        value = rec.query.get(name, [str(default)])[-1]
        if not re.fullmatch(r"-?\d+", value):
            return validation_error(["query", name], "Input should be a valid integer", "int_parsing", value)
        if low is not None and int(value) < low:
            return validation_error(
                ["query", name], f"Input should be greater than or equal to {low}", "greater_than_equal", value
            )
        if high is not None and int(value) > high:
            return validation_error(
                ["query", name], f"Input should be less than or equal to {high}", "less_than_equal", value
            )
        return int(value)

    def _list_voices(self, rec: Recorded) -> Reply:
        limit, offset = self._int_query(rec, "limit", 10, 1, 100), self._int_query(rec, "offset", 0, 0)
        for value in (limit, offset):
            if isinstance(value, JSONReply):
                return value
        kind = rec.query.get("type", ["all"])[-1]
        if kind not in ("all", "custom", "preset"):
            return validation_error(["query", "type"], "Input should be 'all', 'custom' or 'preset'", "enum", kind)
        voices = [v for v in self.voices if kind == "all" or (v.get("user_id") is None) == (kind == "preset")]
        return JSONReply({"items": voices[offset : offset + limit], "total": len(voices), "page": offset // limit,
                          "page_size": limit, "total_pages": math.ceil(len(voices) / limit)})  # fmt: skip

    # files

    def _upload(self, rec: Recorded) -> Reply:
        upload = rec.files.get("file")
        if upload is None:
            return validation_error(["body", "file"], "Field required", "missing")
        purpose = rec.form_value("purpose") or "fine-tune"
        if purpose not in FILE_PURPOSES:
            return validation_error(
                ["body", "purpose"], "Input should be 'fine-tune', 'batch', 'ocr' or 'audio'", "enum", purpose
            )
        expiry = rec.form_value("expiry")
        if expiry is not None and not re.fullmatch(r"\d+", expiry):
            return validation_error(["body", "expiry"], "Input should be a valid integer", "int_parsing", expiry)
        if (size := len(upload.data)) > (limit := self.max_upload_bytes):
            return error_reply(413, f"File size ({size} bytes) exceeds the maximum allowed size of {limit} bytes.")
        mimetype = upload.content_type
        if mimetype == "application/octet-stream":  # the client did not say: guess from the name
            jsonl = upload.filename.endswith(".jsonl")
            mimetype = "application/jsonl" if jsonl else mimetypes.guess_type(upload.filename)[0] or mimetype
        now = int(self.clock())
        sample_type = "batch_request" if purpose == "batch" else "instruct"
        expires_at = now + int(expiry) * 3600 if expiry else None  # expiry in hours
        stored = StoredFile(
            self._new_id("file"),
            upload.filename,
            purpose,
            upload.data,
            now,
            mimetype,
            sample_type,
            expires_at=expires_at,
        )
        with self._lock:
            self.files[stored.id] = stored
            self.upload_count += 1
        return JSONReply(stored.info())

    def _list_files(self, rec: Recorded) -> Reply:
        page, size = self._int_query(rec, "page", 0, 0), self._int_query(rec, "page_size", 100, 1)
        for value in (page, size):
            if isinstance(value, JSONReply):
                return value
        q = rec.query
        with self._lock:
            files = sorted(self.files.values(), key=lambda f: f.created_at)[::-1]  # newest first
        for key in ("purpose", "source", "sample_type", "mimetypes"):
            if key in q:
                files = [f for f in files if getattr(f, key.removesuffix("s") if key == "mimetypes" else key) in q[key]]
        if search := q.get("search", [""])[-1]:
            files = [f for f in files if search.lower() in f.filename.lower()]
        total = len(files) if q.get("include_total", ["true"])[-1].lower() != "false" else None
        data = [f.info() for f in files[page * size : (page + 1) * size]]
        return JSONReply({"data": data, "object": "list", "total": total})

    def _get_file(self, rec: Recorded, file_id: str) -> Reply:
        stored = self._stored(file_id)
        return stored if isinstance(stored, JSONReply) else JSONReply({**stored.info(), "deleted": False})

    def _delete_file(self, rec: Recorded, file_id: str) -> Reply:
        with self._lock:
            stored = self.files.pop(file_id, None)
            self.delete_count += stored is not None
        if stored is None:
            return error_reply(404, f"File {file_id} not found")
        return JSONReply({"id": file_id, "object": "file", "deleted": True})

    def _file_content(self, rec: Recorded, file_id: str) -> Reply:
        stored = self._stored(file_id)
        if isinstance(stored, JSONReply):
            return stored
        disposition = f'attachment; filename="{stored.filename}"'
        return RawReply(
            200, stored.data, {"Content-Type": "application/octet-stream", "Content-Disposition": disposition}
        )

    @staticmethod
    def _signature(file_id: str, expires: str) -> str:
        return hmac.new(_SIGNING_KEY, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def _signed_url(self, rec: Recorded, file_id: str) -> Reply:
        hours = self._int_query(rec, "expiry", 24, 1, 168)
        stored = self._stored(file_id)
        if isinstance(hours, JSONReply) or isinstance(stored, JSONReply):
            return hours if isinstance(hours, JSONReply) else stored
        expires = datetime.datetime.fromtimestamp(self.clock() + hours * 3600, datetime.timezone.utc)
        se = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        query = f"se={quote(se)}&sp=r&sig={self._signature(file_id, se)}"
        return JSONReply({"url": f"{self.root_url}/signed/{file_id}/{quote(stored.filename)}?{query}"})

    def _serve_signed(self, rec: Recorded, file_id: str) -> Reply:
        se, sig = (rec.query.get(key, [""])[-1] for key in ("se", "sig"))
        try:
            expires = datetime.datetime.strptime(se, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            expires = None
        if (
            expires is None
            or not hmac.compare_digest(sig.encode(), self._signature(file_id, se).encode())
            or self.clock() > expires.timestamp()
        ):
            return _blob_error(403, "AuthenticationFailed", "Signature not valid or expired.")
        with self._lock:
            stored = self.files.get(file_id)
        if stored is None:
            return _blob_error(404, "BlobNotFound", "The specified blob does not exist.")
        return RawReply(200, stored.data, {"Content-Type": stored.mimetype})

    def _serve_hosted(self, rec: Recorded, name: str) -> Reply:
        with self._lock:
            hosted = self.hosted.get(name)
        return RawReply(200, hosted[0], {"Content-Type": hosted[1]}) if hosted else RawReply(404, b"Not Found")

    # batches

    def _create_batch(self, req: dict) -> Reply:
        endpoint, input_files, requests = req.get("endpoint"), req.get("input_files"), req.get("requests")
        if endpoint not in BATCH_ENDPOINTS:
            return validation_error(
                ["body", "endpoint"], f"Input should be one of {', '.join(BATCH_ENDPOINTS)}", "enum", endpoint
            )
        timeout = req.get("timeout_hours", 24)
        if not isinstance(timeout, int) or not 1 <= timeout <= 168:
            return validation_error(
                ["body", "timeout_hours"], "Input should be an integer from 1 to 168", input=timeout
            )
        if not isinstance(req.get("metadata") or {}, dict):
            return validation_error(
                ["body", "metadata"], "Input should be a valid dictionary", "dict_type", req["metadata"]
            )
        if bool(input_files) == bool(requests):
            return error_reply(400, "Exactly one of input_files or requests must be given")
        if requests:
            if not isinstance(requests, list) or len(requests) > 10000:
                return validation_error(
                    ["body", "requests"], "Input should be a list of at most 10000 items", input=None
                )
            lines = [_batch_line(r) for r in requests]
        else:
            if not isinstance(input_files, list):
                return validation_error(
                    ["body", "input_files"], "Input should be a valid list", "list_type", input_files
                )
            lines = []
            for file_id in input_files:
                stored = self._stored(str(file_id))
                if isinstance(stored, JSONReply):
                    return stored
                for text in stored.data.decode("utf-8", "replace").splitlines():
                    if text.strip():
                        try:
                            lines.append(_batch_line(json.loads(text)))
                        except ValueError:
                            lines.append((None, None))
        job = BatchJobState(self._new_id("batch"), endpoint, req.get("model"), [str(f) for f in input_files or []],
                            req.get("metadata"), timeout, bool(requests), int(self.clock()), lines)  # fmt: skip
        job.results = [self._batch_result(job, i, custom_id, body) for i, (custom_id, body) in enumerate(lines)]
        with self._batch_lock:
            self.batch_jobs[job.id] = job
            if self.batch_polls <= 0:
                self._finish(job, self.batch_final_status)
            return JSONReply(job.view())

    def _batch_result(self, job: BatchJobState, index: int, custom_id: Any, body: Any) -> tuple[dict, bool]:
        """The result line of one batch request, answered by the fake's own endpoint logic."""
        handlers: dict[str, Callable[[dict], Reply]] = {
            "/v1/chat/completions": self._chat, "/v1/fim/completions": self._fim,
            "/v1/embeddings": self._embeddings, "/v1/ocr": self._ocr,
        }  # fmt: skip
        if custom_id is not None and str(custom_id) in self.batch_fail_ids:
            reply: Reply = error_reply(500, "Internal server error", type="internal_error")
        elif not isinstance(body, dict):
            reply = error_reply(400, "Invalid batch request: each line must be a JSON object with a 'body' object")
        elif not (job.model or body.get("model")):
            reply = error_reply(400, "No model: give one for the job or in the request body")
        elif body.get("stream"):
            reply = error_reply(400, "Streaming is not supported in batch requests")
        elif job.endpoint not in handlers:
            reply = error_reply(400, f"The fake server does not run {job.endpoint} requests in batches")
        else:
            reply = handlers[job.endpoint]({"model": job.model, **body})
        assert isinstance(reply, JSONReply)
        payload, ok = reply.body, reply.status == 200
        message = payload.get("message") if isinstance(payload.get("message"), str) else json.dumps(payload)
        line = {
            "id": str(uuid.uuid5(uuid.UUID(job.id), str(index))), "custom_id": custom_id,
            "response": {"status_code": reply.status, "body": payload},
            "error": None if ok else {"message": message, "code": payload.get("code")},
        }  # fmt: skip
        return line, ok

    def _finish(self, job: BatchJobState, status: str) -> None:
        """End ``job`` (under _batch_lock): write the output and error files of the requests done so far."""
        now = int(self.clock())
        job.status, job.completed_at, job.started_at = status, now, job.started_at or now
        if status == "SUCCESS":
            job.done = len(job.lines)
        elif status == "FAILED":
            job.errors = [{"message": "The batch job failed: an internal error occurred.", "count": 1}]
        elif status == "TIMEOUT_EXCEEDED":
            job.errors = [
                {"message": f"Timeout of {job.timeout_hours} hours exceeded", "count": len(job.lines) - job.done}
            ]
        for kind, wanted in (("output", True), ("error", False)):
            lines = [line for line, ok in job.results[: job.done] if ok == wanted]
            if lines:
                data = "".join(json.dumps(line) + "\n" for line in lines).encode()
                name, sample_type = f"batch-{job.id}-{kind}.jsonl", "batch_result" if wanted else "batch_error"
                stored = StoredFile(
                    self._new_id("file"), name, "batch", data, now, "application/jsonl", sample_type, "mistral"
                )
                with self._lock:
                    self.files[stored.id] = stored
                setattr(job, f"{kind}_file", stored.id)

    def _batch_job(self, job_id: str) -> BatchJobState | JSONReply:
        job = self.batch_jobs.get(job_id)
        return job if job is not None else error_reply(404, f"Batch job {job_id} not found")

    def _get_batch(self, rec: Recorded, job_id: str) -> Reply:
        with self._batch_lock:
            job = self._batch_job(job_id)
            if isinstance(job, JSONReply):
                return job
            if job.status == "CANCELLATION_REQUESTED":
                self._finish(job, "CANCELLED")
            elif job.status not in BATCH_TERMINAL:
                job.polls += 1
                job.started_at = job.started_at or int(self.clock())
                if self.clock() >= job.created_at + job.timeout_hours * 3600:
                    self._finish(job, "TIMEOUT_EXCEEDED")
                elif job.polls >= self.batch_polls:
                    self._finish(job, self.batch_final_status)
                else:
                    job.status, job.done = "RUNNING", len(job.lines) * job.polls // self.batch_polls
            return JSONReply(job.view(outputs=rec.query.get("inline", [""])[-1].lower() == "true"))

    def _cancel_batch(self, rec: Recorded, job_id: str) -> Reply:
        with self._batch_lock:
            job = self._batch_job(job_id)
            if isinstance(job, JSONReply):
                return job
            if job.status in BATCH_TERMINAL:
                return error_reply(400, f"Batch job {job_id} is already {job.status} and cannot be cancelled")
            job.status = "CANCELLATION_REQUESTED"
            return JSONReply(job.view())

    def _delete_batch(self, rec: Recorded, job_id: str) -> Reply:
        with self._batch_lock:
            if self.batch_jobs.pop(job_id, None) is None:
                return error_reply(404, f"Batch job {job_id} not found")
        return JSONReply({"id": job_id, "object": "batch", "deleted": True})

    def _list_batches(self, rec: Recorded) -> Reply:
        page, size = self._int_query(rec, "page", 0, 0), self._int_query(rec, "page_size", 100, 1)
        for value in (page, size):
            if isinstance(value, JSONReply):
                return value
        q = rec.query
        order = q.get("order_by", ["-created"])[-1]
        if order not in ("created", "-created"):
            return validation_error(["query", "order_by"], "Input should be 'created' or '-created'", "enum", order)
        try:
            metadata = json.loads(q["metadata"][-1]) if "metadata" in q else {}
            if not isinstance(metadata, dict):
                raise ValueError("metadata must be a JSON object")
            after = q.get("created_after", [""])[-1]
            after_ts = datetime.datetime.fromisoformat(after.replace("Z", "+00:00")).timestamp() if after else None
        except ValueError as e:
            return validation_error(["query"], f"Invalid filter: {e}", input=dict(q))
        statuses = {s for value in q.get("status", []) for s in value.split(",")}
        model = q.get("model", [None])[-1]
        with self._batch_lock:
            jobs = [j.view() for j in self.batch_jobs.values()]
        jobs = [
            j for j in jobs
            if (not statuses or j["status"] in statuses) and (model is None or j["model"] == model)
            and (after_ts is None or j["created_at"] > after_ts)
            and all((j["metadata"] or {}).get(k) == v for k, v in metadata.items())
        ]  # fmt: skip
        jobs.sort(key=lambda j: j["created_at"])
        if order == "-created":
            jobs.reverse()
        return JSONReply({"data": jobs[page * size : (page + 1) * size], "object": "list", "total": len(jobs)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept before answering each request")
    parser.add_argument("--min-interval", type=float, default=0.0, help="429 to requests closer than this (s)")
    args = parser.parse_args()
    with FakeMistral(latency=args.latency, port=args.port, host=args.host, min_interval=args.min_interval) as fake:
        print(f"fake Mistral API on {fake.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
