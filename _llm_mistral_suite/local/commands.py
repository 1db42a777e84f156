"""``llm mistral local ...``: add, list, remove and download local GGUF models."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import click

from ..errors import MistralSuiteError
from ..storage import plain_name
from .download import DEFAULT_QUANT, LOCAL_DOWNLOADS, download_model
from .gguf import GGUFError, check_gguf, human_size, read_gguf_info
from .prompt import chat_dialect
from .registry import (
    LOCAL_PREFIX,
    add_local_model,
    checked_names,
    llama_cpp_entries,
    llama_cpp_models_path,
    local_models,
    update_local_registry,
)
from .vocab import MISTRAL_MARKERS, MarkerSet


@click.group(name="local")
def local_group() -> None:
    """Local Mistral and Mixtral GGUF models, run by llama.cpp (the [local] extra)."""



def _local_name_for(path: Path) -> str:
    stem = path.name[:-5] if path.name.lower().endswith(".gguf") else path.stem
    return re.sub(r"-\d{5}-of-\d{5}$", "", stem)  # split files: "x-00001-of-00002.gguf" -> "x"


def _absolute(path: str) -> Path:
    """``path`` made absolute, ``~`` expanded, symbolic links kept (so `remove --delete-file` sees a link as one)."""
    try:
        return Path(os.path.abspath(Path(path).expanduser()))
    except RuntimeError as exc:  # "~nobody/x.gguf"
        raise MistralSuiteError(f"Cannot read {path}: {str(exc).rstrip('.')}.") from None


@local_group.command(name="add")
@click.argument("path")
@click.option("--name", help="Model name: mistral-local/NAME (default: the file's stem)")
@click.option("-a", "--alias", "aliases", multiple=True, help="Alias for the model (repeatable)")
@click.option("--embedding", is_flag=True, help="An embedding model, for `llm embed`")
@click.option("--mmproj", help="The model's multimodal projector GGUF (mmproj-...gguf): images with -a")
def local_add_command(path: str, name: str | None, aliases: tuple[str, ...], embedding: bool,
                      mmproj: str | None) -> None:
    """Register a GGUF file as model mistral-local/NAME."""
    file = _absolute(path)
    info = check_gguf(str(file))
    extra = {}
    if mmproj:
        projector = _absolute(mmproj)
        if check_gguf(str(projector)).architecture != "clip":
            raise MistralSuiteError(f"{projector} is not a multimodal projector (its GGUF architecture is "
                                    f"{read_gguf_info(projector).architecture}, not clip).")
        if embedding:
            raise MistralSuiteError("An embedding model takes no --mmproj.")
        extra["mmproj"] = str(projector)
    if name is None:
        name = _local_name_for(file)
        if not plain_name(name, 200):
            ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
            suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_name).strip("-._") or "my-model"
            raise MistralSuiteError(
                f"The file name gives the model name {name!r}, which is not usable (letters, digits, '.', '_' "
                f"and '-' only): choose one with --name, such as --name {suggestion}."
            )
    granted = add_local_model(name, file, aliases, embedding=embedding, extra=extra)
    kind = "embedding model" if embedding else "model"
    named = f" (aliases: {', '.join(granted)})" if granted else ""
    vision = ", images through its projector" if mmproj else ""
    click.echo(f"Added {kind} mistral-local/{name}{named}: {info.architecture}, {human_size(info.file_size)}"
               f"{vision}, {file}")


def _local_rows() -> list[dict[str, Any]]:
    rows = []
    for model in local_models():
        row: dict[str, Any] = {
            "id": model.model_id, "name": model.name, "aliases": list(model.aliases), "path": model.path,
            "embedding": model.embedding, "source": model.source, "mmproj": model.mmproj,
        }
        try:
            info = read_gguf_info(model.path, control_names=MISTRAL_MARKERS)
        except (GGUFError, OSError) as exc:
            row["error"] = str(exc)
        else:
            # tools as a prompt decides them: from the template and the vocabulary's control tokens
            dialect = None if model.embedding else chat_dialect(info.chat_template, MarkerSet(info.control_tokens))
            row.update(size=info.file_size, architecture=info.architecture, recurrent=info.recurrent,
                       context=info.context_length, experts=info.expert_count, experts_used=info.expert_used_count,
                       embedding_length=info.embedding_length, tools=bool(dialect and dialect.tools))
        rows.append(row)
    return rows


@local_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
def local_list_command(as_json: bool) -> None:
    """List the registered GGUF files (including llm-llama-cpp's) with what their headers say."""
    rows = _local_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No local models. Add one with `llm mistral local add PATH` or "
                   "`llm mistral local download MODEL`.")
        return
    for row in rows:
        names = ", ".join(row["aliases"])
        click.echo(row["id"] + (f" (aliases: {names})" if names else "")
                   + (" [embedding]" if row["embedding"] else "")
                   + (" [from llm-llama-cpp]" if row["source"] != "suite" else ""))
        if "error" in row:
            click.echo(f"  unusable: {row['error']}")
        else:
            facts = [human_size(row["size"]),
                     f"architecture {row['architecture']}" + (" (recurrent state)" if row["recurrent"] else "")]
            if row["context"]:
                facts.append(f"context {row['context']}")
            if row["experts"]:
                facts.append(f"MoE {row['experts']} experts ({row['experts_used']} per token)")
            if row["tools"]:
                facts.append("tools")
            if row["mmproj"]:
                facts.append("vision")
            click.echo("  " + ", ".join(facts))
        click.echo(f"  {row['path']}")
        if row["mmproj"]:
            click.echo(f"  projector: {row['mmproj']}")


@local_group.command(name="remove")
@click.argument("name")
@click.option("--delete-file", is_flag=True, help="Also delete the GGUF file (only if nothing else uses it)")
def local_remove_command(name: str, delete_file: bool) -> None:
    """Unregister mistral-local/NAME.

    With --delete-file the file is deleted too, but only a regular file that is still a GGUF and that no
    other registered model (of this plugin or llm-llama-cpp) uses; otherwise it is kept, and the reason said.
    """
    name = name.removeprefix(LOCAL_PREFIX)

    def unregister(models: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        if name not in models:
            if any(model.name == name for model in local_models()):
                raise MistralSuiteError(
                    f"mistral-local/{name} comes from llm-llama-cpp's models.json ({llama_cpp_models_path()}); "
                    "remove it there."
                )
            known = ", ".join(sorted(models)) or "none"
            raise MistralSuiteError(f"No local model named {name!r} (registered: {known}).")
        entry = models.pop(name)
        others: dict[str, Any] = {}  # who uses which file: other entries (models, projectors), llm-llama-cpp's
        for other, value in models.items():
            if isinstance(value, dict):
                others[f"mistral-local/{other}"] = value.get("path")
                others[f"mistral-local/{other} (as its projector)"] = value.get("mmproj")
        others |= {f"llm-llama-cpp's {other}": file for other, file in llama_cpp_entries().items()}
        return entry, reason_to_keep(str(entry.get("path")), others) if delete_file else None

    entry, keep = update_local_registry(unregister)
    message = f"Removed mistral-local/{name}"
    if delete_file and keep:
        message += f"; kept {entry['path']}: {keep}"
    elif delete_file:
        try:
            Path(entry["path"]).unlink()
            message += f" and deleted {entry['path']}"
        except OSError as exc:
            message += f"; could not delete {entry['path']}: {exc.strerror or exc}"
    click.echo(message)


def reason_to_keep(path: str, others: dict[str, Any]) -> str | None:
    """Why the GGUF file at ``path`` must not be deleted (None: it may be): it is not a regular file of its own
    (a link into a shared folder, a directory), no longer a GGUF, or another model (``others``: id -> path) uses it."""
    file = Path(path)
    try:
        if file.is_symlink():
            return f"it is a symbolic link (to {os.path.realpath(file)}), so its target may be shared"
        if not file.exists():
            return "it no longer exists"
        if not file.is_file():
            return "it is not a regular file"
        with open(file, "rb") as handle:
            if handle.read(4) != b"GGUF":
                return "it is no longer a GGUF file (overwritten since it was added?)"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    users = []
    for model, other in others.items():
        try:
            if isinstance(other, str) and os.path.samefile(other, file):
                users.append(model)
        except OSError:
            continue
    if users:
        return f"{', '.join(sorted(users))} still use{'s' if len(users) == 1 else ''} it"
    return None


@local_group.command(name="download")
@click.argument("model", required=False)
@click.option("--name", help="Model name (default: the catalog's)")
@click.option("-a", "--alias", "aliases", multiple=True, help="Extra alias (repeatable)")
@click.option("--quant", default=DEFAULT_QUANT, show_default=True, help="Quantisation, such as Q5_K_M or Q8_0")
@click.option("--json", "as_json", is_flag=True, help="Without MODEL: the catalog as JSON")
def local_download_command(model: str | None, name: str | None, aliases: tuple[str, ...], quant: str,
                           as_json: bool) -> None:
    """Download a Mistral model's GGUF from Hugging Face and register it (with its image projector, if any).

    Without MODEL, show the catalog. Interrupted downloads resume; each file is checked (size, sha256)
    before it is registered.
    """
    if not model:
        _print_download_catalog(as_json)
        return
    key = model.removeprefix(LOCAL_PREFIX).removesuffix("-local")
    entry = LOCAL_DOWNLOADS.get(key) or next(
        (candidate for candidate in LOCAL_DOWNLOADS.values() if model in candidate.aliases), None)
    if entry is None:
        raise MistralSuiteError(f"Unknown model {model!r}. Downloadable: {', '.join(LOCAL_DOWNLOADS)}.")
    key = next(k for k, candidate in LOCAL_DOWNLOADS.items() if candidate is entry)
    name = name or key
    checked_names(name, aliases)  # before the download, not after it
    paths, mmproj = download_model(key, quant.upper())
    extra: dict[str, Any] = {"download": key, "quant": quant.upper()}
    if mmproj:
        extra["mmproj"] = str(mmproj)
    granted = add_local_model(name, paths[0], [*entry.aliases, *aliases], strict_aliases=False, extra=extra)
    named = f" (aliases: {', '.join(granted)})" if granted else ""
    click.echo(f"Registered mistral-local/{name}{named}: {paths[0]}" + (f", projector {mmproj}" if mmproj else ""))


def _print_download_catalog(as_json: bool) -> None:
    rows = [
        {"model": key, "description": entry.description, "size": entry.size, "context": entry.context,
         "capabilities": list(entry.capabilities), "aliases": list(entry.aliases), "source": entry.repo,
         "tokenizer": entry.tokenizer, "quants": list(entry.quants), "projector": entry.mmproj}
        for key, entry in LOCAL_DOWNLOADS.items()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("MODEL", "SIZE", "CONTEXT", "CAN DO", "ALIASES", "SOURCE (Hugging Face)")
    table = [
        (row["model"], row["size"] + (" +proj" if row["projector"] else ""), f"{row['context'] // 1024}k",
         " ".join(["chat", *row["capabilities"]]), ", ".join(row["aliases"]), row["source"])
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    for line in [header, *table]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    click.echo(f"\nSizes are of the {DEFAULT_QUANT} files (+proj: and an image projector of about 0.9 GB). "
               "Download one with: llm mistral local download MODEL [--quant Q5_K_M]")
