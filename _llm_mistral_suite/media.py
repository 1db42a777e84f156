"""The files users point at (a path, a URL, or - for standard input): type, digest, data URI, and a cache of results."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Optional

import llm

from .errors import MistralSuiteError
from .progress import Progress
from .storage import read_json_object, write_json_atomic

STDIN_NAME = "standard input"
OFFICE_TYPES = {  # zip containers: told apart by their extension, not their first bytes
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
_SNIFF_BYTES = 8192
_EXTENSIONS = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/mpeg": ".mp3", "audio/flac": ".flac",
               "audio/ogg": ".ogg", "audio/mp4": ".m4a", "image/jpeg": ".jpg"}  # where mimetypes guesses oddly
_KINDS = {"text": "text", "image": "an image", "audio": "audio", "video": "a video"}


class Media(NamedTuple):
    """A document or recording the user named. Exactly one of ``path``, ``url`` and ``data`` is set."""

    name: str  # as the user wrote it (a path or URL), or "standard input"
    path: Optional[Path] = None
    url: Optional[str] = None
    data: Optional[bytes] = None  # read from standard input
    mime: Optional[str] = None  # what its first bytes (or, for a URL, its name) say it is; None when unknown

    @property
    def size(self) -> Optional[int]:
        if self.path is not None:
            return self.path.stat().st_size
        return len(self.data) if self.data is not None else None

    @property
    def filename(self) -> str:
        """A file name for uploads and the service's ``document_name``."""
        if self.path is not None:
            return self.path.name
        if self.url is not None:
            return Path(self.url.split("?")[0].rstrip("/")).name or "document"
        return "stdin" + (_EXTENSIONS.get(self.mime or "") or mimetypes.guess_extension(self.mime or "") or "")

    def open(self) -> BinaryIO:
        """The content as a binary file (a path is streamed, never read whole)."""
        if self.path is not None:
            return self.path.open("rb")
        if self.data is None:
            raise ValueError("a URL has no local content")
        return io.BytesIO(self.data)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.open() as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def data_uri(self) -> str:
        with self.open() as source:
            encoded = base64.b64encode(source.read()).decode("ascii")
        return f"data:{self.mime or 'application/octet-stream'};base64,{encoded}"


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def sniff_type(head: bytes, name: str) -> Optional[str]:
    """The MIME type of content from its first bytes (llm's own detector), else from its file ``name``."""
    from llm.utils import mimetype_from_string

    suffix = Path(name).suffix.lower()
    if suffix in OFFICE_TYPES and head.startswith(b"PK"):
        return OFFICE_TYPES[suffix]
    return (mimetype_from_string(head) if head else None) or mimetypes.guess_type(name)[0]


def read_media(spec: str, stdin: Optional[BinaryIO] = None) -> Media:
    """What ``spec`` names: a URL (left for the service to fetch), ``-`` (standard input, read now) or a file."""
    if is_url(spec):
        return Media(spec, url=spec, mime=mimetypes.guess_type(spec.split("?")[0])[0])
    if spec == "-":
        stream = stdin if stdin is not None else _stdin()
        data = stream.read()
        if not data:
            raise MistralSuiteError("Nothing arrived on standard input: pipe a file into the command, or name one.")
        return Media(STDIN_NAME, data=data, mime=sniff_type(data[:_SNIFF_BYTES], ""))
    path = Path(spec).expanduser()
    if not path.exists():
        raise MistralSuiteError(f"No such file: {spec}. Check the path (or give a URL, or - for standard input).")
    if path.is_dir():
        raise MistralSuiteError(f"{spec} is a directory: name a file in it.")
    try:
        with path.open("rb") as source:
            head = source.read(_SNIFF_BYTES)
    except OSError as error:
        raise MistralSuiteError(f"Cannot read {spec}: {error.strerror or error}.") from None
    if not head:
        raise MistralSuiteError(f"{spec} is empty.")
    return Media(spec, path=path, mime=sniff_type(head, path.name))


def media_from_attachment(attachment: llm.Attachment) -> Media:
    """An llm attachment (``-a``) as ``Media``; its declared type wins over sniffing."""
    if attachment.url:
        return Media(attachment.url, url=attachment.url, mime=attachment.type)
    if attachment.path:
        path = Path(attachment.path)
        media = read_media(str(path))
        return media._replace(mime=attachment.type or media.mime)
    content = attachment.content or b""
    if not content:
        raise MistralSuiteError("The attachment is empty.")
    return Media(STDIN_NAME, data=content, mime=attachment.type or sniff_type(content[:_SNIFF_BYTES], ""))


def _stdin() -> BinaryIO:
    import click

    return click.get_binary_stream("stdin")


def describe_type(mime: Optional[str]) -> str:
    """``a PDF document (application/pdf)``, for error messages."""
    if not mime:
        return "of a type it cannot tell"
    kind = "a PDF document" if mime == "application/pdf" else _KINDS.get(mime.split("/")[0], "a file")
    return f"{kind} ({mime})"


class ResultCache:
    """Results of paid requests (OCR, transcriptions) in llm's user directory, one JSON file each, keyed by the
    sha256 of the input's content and the settings that change the result. Never holds a key or a URL's result."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    @property
    def directory(self) -> Path:
        return llm.user_dir() / "mistral-suite-cache" / self.kind

    def key(self, media: Media, settings: dict[str, Any]) -> Optional[str]:
        """The cache key for ``media`` with ``settings``; None for a URL (its content may change)."""
        if media.url is not None:
            return None
        described = json.dumps({"sha256": media.sha256(), **settings}, sort_keys=True, default=str)
        return hashlib.sha256(described.encode()).hexdigest()

    def get(self, key: Optional[str]) -> Optional[dict[str, Any]]:
        if key is None:
            return None
        cached = read_json_object(self.directory / f"{key}.json")
        return cached or None

    def put(self, key: Optional[str], result: dict[str, Any]) -> None:
        """Store ``result``; a cache that cannot be written costs one ``Warning:`` line, never the result (it was
        paid for: the caller still returns it)."""
        if key is None:
            return
        try:
            directory = self.directory
            directory.mkdir(parents=True, exist_ok=True)
            write_json_atomic(directory / f"{key}.json", result)
        except MistralSuiteError as error:  # such as a directory where the entry goes
            problem = error.message
        except OSError as error:  # llm's user directory or the cache's folder cannot be made
            problem = f"Cannot create {error.filename or 'the cache folder'}: {error.strerror or error}."
        else:
            return
        Progress().warn(f"{problem} The result was not cached.")


def rejected_input(media: Media, service: str, error: MistralSuiteError, hint: str = "") -> MistralSuiteError:
    """``error`` of a request about ``media``, reworded to name the file when the service refused the input
    itself (400, 413, 415, 422); other failures (key, rate limit, connection) keep their own wording."""
    if error.status not in (400, 413, 415, 422):
        return error
    what = error.detail or error.message
    if error.status == 413 and not hint:
        hint = "It is too large for the service: split it into smaller files."
    message = f"{service} could not read {media.name}: {what.rstrip('.')}."
    return MistralSuiteError(f"{message} {hint}".strip(), status=error.status, detail=error.detail)
