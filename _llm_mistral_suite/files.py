"""Mistral's ``/v1/files``: uploads streamed from disk, signed URLs, downloads and deletes (documents, audio, batch)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, BinaryIO, Iterator, NamedTuple, Union

from .errors import MistralSuiteError
from .settings import mistral_endpoint
from .transport import Payload, download, request, request_json

MAX_FILE_BYTES = 512 * 1024 * 1024  # the service's limit per uploaded file

Source = Union[Path, bytes, BinaryIO]


class UploadedFile(NamedTuple):
    """A file stored on Mistral's side."""

    id: str
    filename: str
    size: int
    purpose: str


def _size(source: Source) -> int:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, Path):
        return source.stat().st_size
    position = source.tell()
    size = source.seek(0, os.SEEK_END)
    source.seek(position)
    return size


def upload_file(key: str, source: Source, filename: str, purpose: str,
                mime: str = "application/octet-stream") -> UploadedFile:
    """Upload ``source`` (a path, bytes or a seekable binary file: streamed, not read into memory)."""
    size = _size(source)
    if size > MAX_FILE_BYTES:
        raise MistralSuiteError(
            f"{filename} is {size / 1024 ** 2:,.0f} MB; Mistral's API takes files of at most "
            f"{MAX_FILE_BYTES // 1024 ** 2} MB."
        )
    with contextlib.ExitStack() as stack:
        content: Any = stack.enter_context(open(source, "rb")) if isinstance(source, Path) else source
        payload = Payload(files={"file": (filename, content, mime)}, data={"purpose": purpose})
        answer = request(mistral_endpoint(), "POST", "/files", key, payload).json()
    try:
        return UploadedFile(str(answer["id"]), answer.get("filename") or filename, int(answer.get("bytes") or size), purpose)
    except (KeyError, TypeError, ValueError):
        raise MistralSuiteError("Mistral's API answered an upload without a file id.") from None


def signed_url(key: str, file_id: str, expiry_hours: int = 24) -> str:
    """A URL that lets the service (OCR, chat) read an uploaded file without the key."""
    answer = request_json(mistral_endpoint(), "GET", f"/files/{file_id}/url?expiry={expiry_hours}", key)
    if not isinstance(answer, dict) or not isinstance(answer.get("url"), str):
        raise MistralSuiteError(f"Mistral's API gave no signed URL for file {file_id}.")
    return answer["url"]


def download_content(key: str, file_id: str, dest: BinaryIO) -> int:
    """Write the content of file ``file_id`` to ``dest``; returns the byte count."""
    return download(mistral_endpoint(), f"/files/{file_id}/content", key, dest)


def delete_file(key: str, file_id: str) -> None:
    request(mistral_endpoint(), "DELETE", f"/files/{file_id}", key)


@contextlib.contextmanager
def temporary_upload(key: str, source: Source, filename: str, purpose: str,
                     mime: str = "application/octet-stream") -> Iterator[UploadedFile]:
    """An upload that is deleted again when the block ends, whatever happened inside it."""
    uploaded = upload_file(key, source, filename, purpose, mime)
    try:
        yield uploaded
    finally:
        with contextlib.suppress(MistralSuiteError):
            delete_file(key, uploaded.id)
