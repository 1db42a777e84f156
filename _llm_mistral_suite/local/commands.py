"""``llm mistral local ...``: add, list, remove and download local GGUF models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from ..errors import MistralSuiteError
from .download import LOCAL_DOWNLOADS, download_model
from .gguf import GGUFError, check_gguf, human_size, read_gguf_info
from .registry import (
    LOCAL_PREFIX,
    add_local_model,
    llama_cpp_models_path,
    local_models,
    read_local_registry,
    write_local_registry,
)


@click.group(name="local")
def local_group() -> None:
    """Local Mistral and Mixtral GGUF models, run by llama.cpp (the [local] extra)."""



def _local_name_for(path: Path) -> str:
    stem = path.name[:-5] if path.name.lower().endswith(".gguf") else path.stem
    return re.sub(r"-\d{5}-of-\d{5}$", "", stem)  # split files: "x-00001-of-00002.gguf" -> "x"


@local_group.command(name="add")
@click.argument("path")
@click.option("--name", help="Model name: mistral-local/NAME (default: the file's stem)")
@click.option("-a", "--alias", "aliases", multiple=True, help="Alias for the model (repeatable)")
@click.option("--embedding", is_flag=True, help="An embedding model, for `llm embed`")
def local_add_command(path: str, name: str | None, aliases: tuple[str, ...], embedding: bool) -> None:
    """Register a GGUF file as model mistral-local/NAME."""
    file = Path(path).expanduser().resolve()
    info = check_gguf(str(file))
    name = name or _local_name_for(file)
    existing = read_local_registry().get(name)
    if existing and Path(existing["path"]) != file:
        raise MistralSuiteError(
            f"mistral-local/{name} is already registered ({existing['path']}). "
            f"Choose another --name or run `llm mistral local remove {name}` first."
        )
    granted = add_local_model(name, file, aliases, embedding=embedding)
    kind = "embedding model" if embedding else "model"
    extra = f" (aliases: {', '.join(granted)})" if granted else ""
    click.echo(f"Added {kind} mistral-local/{name}{extra}: {info.architecture}, {human_size(info.file_size)}, {file}")


def _local_rows() -> list[dict[str, Any]]:
    rows = []
    for model in local_models():
        row: dict[str, Any] = {
            "id": model.model_id, "name": model.name, "aliases": list(model.aliases), "path": model.path,
            "embedding": model.embedding, "source": model.source,
        }
        try:
            info = read_gguf_info(model.path)
        except (GGUFError, OSError) as exc:
            row["error"] = str(exc)
        else:
            template = info.chat_template
            row.update(size=info.file_size, architecture=info.architecture, recurrent=info.recurrent,
                       context=info.context_length, experts=info.expert_count, experts_used=info.expert_used_count,
                       embedding_length=info.embedding_length,
                       tools="[AVAILABLE_TOOLS]" in template or "[TOOL_CALLS]" in template)
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
            click.echo("  " + ", ".join(facts))
        click.echo(f"  {row['path']}")


@local_group.command(name="remove")
@click.argument("name")
@click.option("--delete-file", is_flag=True, help="Also delete the GGUF file")
def local_remove_command(name: str, delete_file: bool) -> None:
    """Unregister mistral-local/NAME."""
    name = name.removeprefix(LOCAL_PREFIX)
    models = read_local_registry()
    if name not in models:
        if any(model.name == name for model in local_models()):
            raise MistralSuiteError(
                f"mistral-local/{name} comes from llm-llama-cpp's models.json ({llama_cpp_models_path()}); "
                "remove it there."
            )
        known = ", ".join(sorted(models)) or "none"
        raise MistralSuiteError(f"No local model named {name!r} (registered: {known}).")
    entry = models.pop(name)
    write_local_registry(models)
    message = f"Removed mistral-local/{name}"
    if delete_file:
        try:
            Path(entry["path"]).unlink()
            message += f" and deleted {entry['path']}"
        except OSError as exc:
            message += f"; could not delete {entry['path']}: {exc.strerror or exc}"
    click.echo(message)


@local_group.command(name="download")
@click.argument("model", required=False)
@click.option("--name", help="Model name (default: the catalog's)")
@click.option("-a", "--alias", "aliases", multiple=True, help="Extra alias (repeatable)")
def local_download_command(model: str | None, name: str | None, aliases: tuple[str, ...]) -> None:
    """Download a Mistral model's GGUF (Q4_K_M) from Hugging Face and register it.

    Without MODEL, list the catalog. Interrupted downloads resume; the file is checked (size, sha256)
    before it is registered.
    """
    if not model:
        for key, entry in LOCAL_DOWNLOADS.items():
            click.echo(f"{key:16} {entry['size']:>7}  {entry['description']} ({entry['repo']}), "
                       f"aliases: {', '.join(entry['aliases'])}")
        return
    key = model.removeprefix(LOCAL_PREFIX).removesuffix("-local")
    entry = LOCAL_DOWNLOADS.get(key)
    if entry is None:
        raise MistralSuiteError(f"Unknown model {model!r}. Downloadable: {', '.join(LOCAL_DOWNLOADS)}.")
    paths = download_model(key)
    name = name or key
    granted = add_local_model(name, paths[0], [*entry["aliases"], *aliases], strict_aliases=False,
                              extra={"download": key})
    extra = f" (aliases: {', '.join(granted)})" if granted else ""
    click.echo(f"Registered mistral-local/{name}{extra}: {paths[0]}")
