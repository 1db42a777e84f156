"""Downloads of Mistral's open-weights GGUF files from Hugging Face: the catalog, resumable and checked."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import click

from ..errors import MistralSuiteError, service_message
from ..settings import HF_BASE_URL_ENV, hf_base_url
from ..transport import sync_client
from .gguf import GGUFError, human_size, read_gguf_info
from .registry import local_models_dir

# `llm mistral local download MODEL`: the seed's open-weights models (Q4_K_M GGUF files on Hugging Face).
# sha256/size per file are None where not pinned here: the download is then checked against the sha256
# Hugging Face sends (X-Linked-Etag) and the size it announces.
LOCAL_DOWNLOADS: dict[str, dict[str, Any]] = {
    "mistral-7b": {
        "description": "Mistral 7B Instruct v0.3", "size": "4.4 GB", "tokenizer": "v3",
        "repo": "bartowski/Mistral-7B-Instruct-v0.3-GGUF", "files": ["Mistral-7B-Instruct-v0.3-Q4_K_M.gguf"],
        "aliases": ["mistral-7b-local"],
    },
    "mistral-7b-v0.2": {
        "description": "Mistral 7B Instruct v0.2", "size": "4.4 GB", "tokenizer": "v1",
        "repo": "TheBloke/Mistral-7B-Instruct-v0.2-GGUF", "files": ["mistral-7b-instruct-v0.2.Q4_K_M.gguf"],
        "aliases": ["mistral-7b-v0.2-local"],
    },
    "mixtral-8x7b": {
        "description": "Mixtral 8x7B Instruct v0.1", "size": "26 GB", "tokenizer": "v1",
        "repo": "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF", "files": ["mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf"],
        "aliases": ["mixtral-8x7b-local"],
    },
    "mixtral-8x22b": {
        "description": "Mixtral 8x22B Instruct v0.1 (2 parts)", "size": "86 GB", "tokenizer": "v3",
        "repo": "bartowski/Mixtral-8x22B-Instruct-v0.1-GGUF",
        "files": [
            "Mixtral-8x22B-Instruct-v0.1-Q4_K_M/Mixtral-8x22B-Instruct-v0.1-Q4_K_M-00001-of-00002.gguf",
            "Mixtral-8x22B-Instruct-v0.1-Q4_K_M/Mixtral-8x22B-Instruct-v0.1-Q4_K_M-00002-of-00002.gguf",
        ],
        "aliases": ["mixtral-8x22b-local"],
    },
    "codestral-22b": {
        "description": "Codestral 22B v0.1", "size": "13 GB", "tokenizer": "v3",
        "repo": "bartowski/Codestral-22B-v0.1-GGUF", "files": ["Codestral-22B-v0.1-Q4_K_M.gguf"],
        "aliases": ["codestral-22b-local"],
    },
    "mathstral-7b": {
        "description": "Mathstral 7B v0.1", "size": "4.4 GB", "tokenizer": "v3",
        "repo": "bartowski/mathstral-7B-v0.1-GGUF", "files": ["mathstral-7B-v0.1-Q4_K_M.gguf"],
        "aliases": ["mathstral-7b-local"],
    },
    "mistral-nemo": {
        "description": "Mistral Nemo Instruct 2407", "size": "7.5 GB", "tokenizer": "v3 (tekken)",
        "repo": "bartowski/Mistral-Nemo-Instruct-2407-GGUF", "files": ["Mistral-Nemo-Instruct-2407-Q4_K_M.gguf"],
        "aliases": ["mistral-nemo-local"],
    },
}


def _sha256_header(responses: Iterable[Any]) -> str | None:
    """The file's sha256 as Hugging Face announces it: ``X-Linked-Etag`` (LFS files) or ``ETag``."""
    for response in responses:
        for name in ("x-linked-etag", "etag"):
            value = (response.headers.get(name) or "").strip().removeprefix("W/").strip('"').lower()
            if re.fullmatch(r"[0-9a-f]{64}", value):
                return value
    return None


def download_file(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
                  label: str | None = None) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` with an HTTP
    Range request; the size and sha256 are checked before the file takes its final name."""
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    token = os.environ.get("HF_TOKEN")
    if token and not os.environ.get(HF_BASE_URL_ENV):
        headers["Authorization"] = f"Bearer {token}"
    label = label or dest.name
    hasher = hashlib.sha256()
    total: int | None = None
    announced: str | None = None
    try:
        with sync_client().stream("GET", url, headers=headers, follow_redirects=True) as response:
            announced = _sha256_header([*response.history, response])
            status = response.status_code
            if status == 416 and have:  # the .part already holds the whole file
                match = re.search(r"/(\d+)", response.headers.get("content-range", ""))
                total = int(match.group(1)) if match else have
            elif status == 206 and have:
                match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("content-range", ""))
                if not match or int(match.group(1)) != have:
                    raise MistralSuiteError(f"Download of {url} failed: the server resumed at the wrong place "
                                            f"({response.headers.get('content-range')!r}). Delete {part} and retry.")
                total = int(match.group(2)) if match.group(2) != "*" else None
            elif status == 200:
                have = 0
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            else:
                response.read()
                detail = service_message(response.content)
                raise MistralSuiteError(f"Download of {url} failed: HTTP {status}" + (f" ({detail})" if detail else ""))
            if have:
                with open(part, "rb") as existing:
                    for block in iter(lambda: existing.read(1 << 20), b""):
                        hasher.update(block)
            if status != 416:
                with open(part, "ab" if have else "wb") as out, click.progressbar(
                    length=total or 0, label=f"{label} ({human_size(total)})" if total else label,
                    file=sys.stderr, show_pos=False, show_percent=bool(total), show_eta=bool(total),
                ) as bar:
                    bar.update(have)
                    for block in response.iter_bytes():
                        out.write(block)
                        hasher.update(block)
                        bar.update(len(block))
    except httpx.HTTPError as exc:
        got = part.stat().st_size if part.exists() else 0
        raise MistralSuiteError(
            f"Download of {url} was interrupted after {human_size(got)} ({exc or type(exc).__name__}). "
            "Run the same command again to resume."
        ) from None
    got = part.stat().st_size
    expected_size = size or total
    if expected_size is not None and got != expected_size:
        if got > expected_size:
            part.unlink()
        raise MistralSuiteError(
            f"Download of {url} is incomplete: {got:,} of {expected_size:,} bytes. "
            "Run the same command again to resume."
        )
    expected_sha = (sha256 or announced or "").lower() or None
    digest = hasher.hexdigest()
    if expected_sha and digest != expected_sha:
        part.unlink()
        raise MistralSuiteError(
            f"Download of {url} failed the checksum: sha256 {digest}, expected {expected_sha}. "
            "The damaged file was deleted; run the command again."
        )
    if not expected_sha:
        click.echo(f"Note: no sha256 known for {dest.name}; checked its size only.", err=True)
    part.replace(dest)
    return dest


def download_model(key: str) -> list[Path]:
    """The files of catalog model ``key`` in ``local_models_dir()``: kept if already whole, else downloaded
    and checked; a file that is not a usable GGUF is deleted, never returned."""
    entry = LOCAL_DOWNLOADS[key]
    directory = local_models_dir()
    shas, sizes = entry.get("sha256") or [], entry.get("sizes") or []
    paths = []
    for index, filename in enumerate(entry["files"]):
        dest = directory / Path(filename).name
        if dest.exists():
            try:
                read_gguf_info(dest)
            except (GGUFError, OSError):
                dest.unlink()  # a damaged earlier copy: fetch it again
            else:
                click.echo(f"{dest.name} is already downloaded.", err=True)
        if not dest.exists():
            url = f"{hf_base_url()}/{entry['repo']}/resolve/main/{filename}"
            download_file(url, dest, sha256=shas[index] if index < len(shas) else None,
                          size=sizes[index] if index < len(sizes) else None,
                          label=f"{entry['description']}" + (f" part {index + 1}" if len(entry["files"]) > 1 else ""))
            try:
                read_gguf_info(dest)
            except GGUFError as exc:  # e.g. an error page served as the file: never register it
                dest.unlink()
                raise MistralSuiteError(f"The download of {filename} is not a usable model ({exc}); it was deleted.")
        paths.append(dest)
    return paths
