"""Downloads of Mistral's open-weights GGUF files from Hugging Face: the catalog, resumable and checked."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import click

from ..errors import MistralSuiteError, redact, service_message
from ..settings import HF_BASE_URL_ENV, hf_base_url, usable_key
from ..transport import sync_client
from .gguf import GGUFError, human_size, read_gguf_info
from .registry import local_models_dir

BARTOWSKI_QUANTS = ("Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
THEBLOKE_QUANTS = ("Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
DEFAULT_QUANT = "Q4_K_M"


class LocalDownload(NamedTuple):
    """One model of ``llm mistral local download``: where its GGUF files are on Hugging Face and what it can do.

    ``files`` and ``mmproj`` name files in ``repo``, with ``{quant}`` standing for the quantisation (one of
    ``quants``). ``size`` is that of the Q4_K_M files. ``matches`` (a regular expression, case-insensitive)
    recognises the model in a GGUF file's name or a server's model name.
    """

    description: str
    repo: str
    files: tuple[str, ...]
    size: str
    context: int
    capabilities: tuple[str, ...]  # "tools", "vision", "reasoning", "fim"
    aliases: tuple[str, ...]
    tokenizer: str
    matches: str
    quants: tuple[str, ...] = BARTOWSKI_QUANTS
    mmproj: str | None = None  # the multimodal projector (vision), downloaded beside the model

    def file_names(self, quant: str) -> list[str]:
        return [name.format(quant=quant) for name in self.files]


def _bartowski(description: str, name: str, **facts: Any) -> LocalDownload:
    """A model in bartowski's layout: ``bartowski/NAME-GGUF`` holding ``NAME-{quant}.gguf``."""
    mmproj = facts.pop("vision_projector", False)
    return LocalDownload(description, f"bartowski/{name}-GGUF", (f"{name}-{{quant}}.gguf",),
                         mmproj=f"mmproj-{name}-f16.gguf" if mmproj else None, **facts)


# `llm mistral local download MODEL`: the seed's open-weights models and today's, as GGUF files on Hugging Face.
# sha256 and sizes are not pinned here: each file is checked against the sha256 Hugging Face sends
# (X-Linked-Etag) and the size it announces.
LOCAL_DOWNLOADS: dict[str, LocalDownload] = {
    "mistral-7b": _bartowski("Mistral 7B Instruct v0.3", "Mistral-7B-Instruct-v0.3", size="4.4 GB", context=32768,
                             capabilities=("tools",), aliases=("mistral-7b-local",), tokenizer="v3",
                             matches=r"mistral-7b-instruct-v0\.3|open-mistral-7b"),
    "mistral-7b-v0.2": LocalDownload(
        "Mistral 7B Instruct v0.2", "TheBloke/Mistral-7B-Instruct-v0.2-GGUF", ("mistral-7b-instruct-v0.2.{quant}.gguf",),
        "4.4 GB", 32768, (), ("mistral-7b-v0.2-local",), "v1", r"mistral-7b-instruct-v0\.2", THEBLOKE_QUANTS),
    "mixtral-8x7b": LocalDownload(
        "Mixtral 8x7B Instruct v0.1", "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF",
        ("mixtral-8x7b-instruct-v0.1.{quant}.gguf",), "26 GB", 32768, (), ("mixtral-8x7b-local",), "v1",
        r"mixtral-8x7b", THEBLOKE_QUANTS),
    "mixtral-8x22b": LocalDownload(
        "Mixtral 8x22B Instruct v0.1 (2 parts)", "bartowski/Mixtral-8x22B-Instruct-v0.1-GGUF",
        ("Mixtral-8x22B-Instruct-v0.1-{quant}/Mixtral-8x22B-Instruct-v0.1-{quant}-00001-of-00002.gguf",
         "Mixtral-8x22B-Instruct-v0.1-{quant}/Mixtral-8x22B-Instruct-v0.1-{quant}-00002-of-00002.gguf"),
        "86 GB", 65536, ("tools",), ("mixtral-8x22b-local",), "v3", r"mixtral-8x22b", ("Q4_K_M",)),
    "codestral-22b": _bartowski("Codestral 22B v0.1", "Codestral-22B-v0.1", size="13 GB", context=32768,
                                capabilities=("fim",), aliases=("codestral-22b-local",), tokenizer="v3",
                                matches=r"codestral-22b"),
    "mathstral-7b": _bartowski("Mathstral 7B v0.1", "mathstral-7B-v0.1", size="4.4 GB", context=32768,
                               capabilities=(), aliases=("mathstral-7b-local",), tokenizer="v3", matches=r"mathstral"),
    "mistral-nemo": _bartowski("Mistral Nemo Instruct 2407", "Mistral-Nemo-Instruct-2407", size="7.5 GB",
                               context=131072, capabilities=("tools",), aliases=("mistral-nemo-local",),
                               tokenizer="tekken", matches=r"mistral-nemo|open-mistral-nemo"),
    "codestral-mamba": LocalDownload(
        "Codestral Mamba 7B v0.1 (Mamba-2)", "gabriellarson/Mamba-Codestral-7B-v0.1-GGUF",
        ("Mamba-Codestral-7B-v0.1-{quant}.gguf",), "4.4 GB", 262144, ("fim",), ("codestral-mamba-local",), "v3",
        r"mamba-codestral|codestral-mamba", ("Q2_K", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")),
    "mistral-small-3.2": _bartowski("Mistral Small 3.2 24B Instruct 2506", "mistralai_Mistral-Small-3.2-24B-Instruct-2506",
                                    size="14.3 GB", context=131072, capabilities=("tools", "vision"),
                                    aliases=("mistral-small-local",), tokenizer="tekken v11",
                                    matches=r"mistral-small-3\.2", vision_projector=True),
    "devstral-small": _bartowski("Devstral Small 24B 2507", "mistralai_Devstral-Small-2507", size="14.3 GB",
                                 context=131072, capabilities=("tools",), aliases=("devstral-small-local",),
                                 tokenizer="tekken v11", matches=r"devstral-small"),
    "magistral-small": _bartowski("Magistral Small 24B 2509", "mistralai_Magistral-Small-2509", size="14.3 GB",
                                  context=131072, capabilities=("reasoning", "tools", "vision"),
                                  aliases=("magistral-small-local",), tokenizer="tekken v13", matches=r"magistral-small",
                                  vision_projector=True),
    "ministral-8b": _bartowski("Ministral 8B Instruct 2410", "Ministral-8B-Instruct-2410", size="4.9 GB",
                               context=131072, capabilities=("tools",), aliases=("ministral-8b-local",),
                               tokenizer="tekken", matches=r"ministral-8b"),
    "pixtral-12b": _bartowski("Pixtral 12B 2409", "mistral-community_pixtral-12b", size="7.5 GB", context=131072,
                              capabilities=("vision",), aliases=("pixtral-12b-local",), tokenizer="tekken",
                              matches=r"pixtral-12b", vision_projector=True),
}


def matching_downloads(name: str) -> list[str]:
    """The catalog models that a GGUF file's or a server model's ``name`` is a build of."""
    return [key for key, entry in LOCAL_DOWNLOADS.items() if re.search(entry.matches, name, re.IGNORECASE)]


def route_runners() -> dict[str, list[str]]:
    """Catalog model -> the local and server models registered here that run it: local ones downloaded as it or
    named like it (their file), then servers whose model (or name) is. Reads our registries only: no network."""
    from ..servers import load_servers
    from .registry import local_models, read_local_registry

    downloaded = {name: entry.get("download") for name, entry in read_local_registry().items()}
    runners: dict[str, list[str]] = {}
    for model in local_models():
        if model.embedding:
            continue
        key = downloaded.get(model.name)
        for match in [key] if key in LOCAL_DOWNLOADS else matching_downloads(Path(model.path).name):
            runners.setdefault(match, []).append(model.model_id)
    for server in load_servers():
        if not server.embedding:
            for match in matching_downloads(server.model or server.name):
                runners.setdefault(match, []).append(server.name)
    return runners


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
    token = None if os.environ.get(HF_BASE_URL_ENV) else usable_key(
        os.environ.get("HF_TOKEN"), "HF_TOKEN", "Set HF_TOKEN again (or unset it: these downloads are public).")
    if token:
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
                detail = service_message(response.content, token)
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
        reason = redact(str(exc), token) or type(exc).__name__  # httpx quotes a header it refuses
        raise MistralSuiteError(
            f"Download of {url} was interrupted after {human_size(got)} ({reason}). "
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


def download_model(key: str, quant: str = DEFAULT_QUANT) -> tuple[list[Path], Path | None]:
    """The files of catalog model ``key`` (and its projector) in ``local_models_dir()``: kept if already whole,
    else downloaded and checked; a file that is not a usable GGUF is deleted, never returned."""
    entry = LOCAL_DOWNLOADS[key]
    if quant not in entry.quants:
        raise MistralSuiteError(f"{key} has no {quant} quantisation in {entry.repo}; choose --quant "
                                f"{', '.join(entry.quants)}.")
    names = entry.file_names(quant)
    paths = [_fetch(entry, filename, f"{entry.description} {quant}"
                    + (f" part {index + 1}" if len(names) > 1 else ""), quant)
             for index, filename in enumerate(names)]
    mmproj = _fetch(entry, entry.mmproj, f"{entry.description} image projector", quant) if entry.mmproj else None
    return paths, mmproj


def _fetch(entry: LocalDownload, filename: str, label: str, quant: str) -> Path:
    dest = local_models_dir() / Path(filename).name
    if dest.exists():
        try:
            read_gguf_info(dest)
        except (GGUFError, OSError):
            dest.unlink()  # a damaged earlier copy: fetch it again
        else:
            click.echo(f"{dest.name} is already downloaded.", err=True)
            return dest
    url = f"{hf_base_url()}/{entry.repo}/resolve/main/{filename}"
    try:
        download_file(url, dest, label=label)
    except MistralSuiteError as exc:
        if "HTTP 404" in str(exc) and quant != DEFAULT_QUANT:
            raise MistralSuiteError(f"{exc} {entry.repo} may not have {quant}: try another --quant "
                                    f"({', '.join(entry.quants)}).") from None
        raise
    try:
        read_gguf_info(dest)
    except GGUFError as exc:  # e.g. an error page served as the file: never register it
        dest.unlink()
        raise MistralSuiteError(f"The download of {filename} is not a usable model ({exc}); it was deleted.")
    return dest
