"""``llm mistral ...`` commands for the API and servers: models, refresh, fim, servers (local ones are in ``local/``)."""

from __future__ import annotations

import datetime
import io
import json
import re
import sys
from typing import BinaryIO

import click
import llm

from .catalog import GA, RETIRED, CatalogEntry, catalog_cache_path, load_catalog, names_in_use
from .embeddings import embedding_models
from .errors import MistralSuiteError
from .fim import FIM_DEFAULT_MODEL, CodestralFIM
from .local.models import LocalChat
from .servers import LLAMAFILE, load_servers, server_url, servers_path
from .settings import mistral_endpoint, mistral_key, shown_url
from .storage import plain_name, update_json_object
from .transport import request_json


@click.command(name="models")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
def models_command(as_json: bool) -> None:
    """List the Mistral API models llm knows (built in, plus `llm mistral refresh`).

    For a retired model: the local or server model that runs it here, or the command that gets one."""
    from .local.download import route_runners

    runners = route_runners()
    rows = [
        {
            "id": model_id,
            "aliases": list(aliases),
            "status": entry.status,
            "deprecation_date": entry.deprecation_date,
            "replacement": entry.replacement,
            "context": entry.context,
            "capabilities": sorted(capabilities),
            **({"runs_here": runners.get(entry.local_route or "", []), "local_route": entry.local_route}
               if entry.status == RETIRED else {}),
        }
        for entry in load_catalog()
        for model_id, aliases, capabilities in usable_ids(entry)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("id", "aliases", "status", "context", "capabilities", "runs here")
    table = [
        (
            row["id"],
            ", ".join(row["aliases"]),
            row["status"] + (f" {row['deprecation_date']}" if row["deprecation_date"] else "")
            + (f" -> {row['replacement']}" if row["replacement"] and row["status"] != GA else ""),
            f"{row['context'] // 1024}k" if row["context"] else "",
            " ".join(row["capabilities"]),
            ", ".join(row["runs_here"]) if row.get("runs_here") else
            f"llm mistral local download {row['local_route']}" if row.get("local_route") else "",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    for line in [header, *table]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def usable_ids(entry: CatalogEntry) -> list[tuple[str, tuple[str, ...], frozenset[str]]]:
    """The model ids (with aliases and capabilities) that ``entry`` gives llm: codestral-embed one per output
    size, the default FIM model also ``codestral-fim``."""
    if entry.api_name == "codestral-embed":
        return [(model.model_id, aliases, entry.capabilities) for model, aliases in embedding_models()
                if model.api_name == entry.api_name]
    ids = [(entry.model_id, entry.aliases, entry.capabilities)]
    if entry.api_name == FIM_DEFAULT_MODEL:
        ids.append((CodestralFIM.model_id, ("codestral-fim",), frozenset({"fim"})))
    return ids


@click.command(name="refresh")
@click.option("--key", help="Mistral API key to use")
def refresh_command(key: str | None) -> None:
    """Fetch Mistral's model list (GET /v1/models) into llm's user directory."""
    cards = request_json(mistral_endpoint(), "GET", "/models", mistral_key(key)).get("data")
    if not isinstance(cards, list):
        raise MistralSuiteError("Mistral's API answered /v1/models without a model list.")
    known = {entry.api_name for entry in load_catalog()}
    path = catalog_cache_path()
    fetched = {"fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(), "data": cards}
    update_json_object(path, lambda cache: (cache.clear(), cache.update(fetched)), replace_damaged=True)
    new = sorted({card["id"] for card in cards if isinstance(card, dict) and isinstance(card.get("id"), str)} - known)
    click.echo(f"{len(cards)} models from Mistral's API saved to {path}")
    if new:
        click.echo("New: " + ", ".join(new))


@click.command(name="fim")
@click.argument("prefix", required=False)
@click.option("--suffix", help="The code after the gap")
@click.option("--prefix-file", type=click.File("rb"), help="Read the code before the gap from this file")
@click.option("--suffix-file", type=click.File("rb"), help="Read the code after the gap from this file")
@click.option("--file", "source", type=click.File("rb"), help="Split this file at --line into prefix and suffix")
@click.option("--line", "cursor", help="Cursor in --file: N (start of line N) or N:COL, 1-based")
@click.option("-m", "--model", "model_name",
              help="A FIM model: codestral-fim (default), e.g. codestral-2508, or a local Codestral GGUF mistral-local/NAME")
@click.option("-o", "--option", "options", type=(str, str), multiple=True, help="Option, e.g. -o max_tokens 64")
@click.option("--no-stream", is_flag=True, help="Wait for the whole middle")
@click.option("--key", help="Mistral API key to use")
@click.option("-n", "--no-log", is_flag=True, help="Don't log to logs.db")
def fim_command(prefix, suffix, prefix_file, suffix_file, source, cursor, model_name, options, no_stream, key, no_log):
    """Fill in the middle with Codestral: print only the code that goes between PREFIX and --suffix.

    The prefix comes from PREFIX, --prefix-file, --file with --line, or standard input. With
    -m mistral-local/NAME a local Codestral GGUF fills it in through llama.cpp (-o random_seed is its seed).
    """
    import sqlite_utils
    from llm.cli import logs_db_path, logs_on, render_errors
    from llm.migrations import migrate
    from pydantic import ValidationError

    if source is not None:
        if cursor is None:
            raise click.UsageError("--file needs --line N or --line N:COL")
        if prefix is not None or prefix_file or suffix is not None or suffix_file:
            raise click.UsageError("--file gives both prefix and suffix: no PREFIX, --prefix-file, --suffix or --suffix-file")
        prefix, suffix = split_at_cursor(read_text(source), cursor)
    elif cursor is not None:
        raise click.UsageError("--line needs --file")
    elif prefix is not None and prefix_file:
        raise click.UsageError("give PREFIX or --prefix-file, not both")
    elif suffix is not None and suffix_file:
        raise click.UsageError("give --suffix or --suffix-file, not both")
    elif prefix is None:
        stdin = sys.stdin
        if not prefix_file and stdin.isatty():
            raise click.UsageError("give PREFIX, --prefix-file or --file, or pipe the code before the gap to stdin")
        prefix = read_text(prefix_file or stdin.buffer)
    if suffix_file is not None:
        suffix = read_text(suffix_file)
    model = local_chat_model(model_name) or llm.get_model("codestral-fim")
    settings = dict(options)
    if isinstance(model, LocalChat):  # llama.cpp: the local model's options, under the API's names
        if "min_tokens" in settings:
            raise MistralSuiteError("min_tokens is not supported by local models (llama.cpp)")
        if "random_seed" in settings:
            settings["seed"] = settings.pop("random_seed")
        suffix = suffix or ""  # a suffix, even empty, is what makes a local model fill in the middle
    elif model_name and model_name not in ("codestral-fim", model.model_id):
        settings["model"] = model_name
    if suffix is not None:
        settings["suffix"] = suffix
    try:
        validated = {name: value for name, value in model.Options(**settings) if value is not None}
    except ValidationError as error:
        raise click.ClickException(render_errors(error.errors()))
    response = model.prompt(prefix, stream=not no_stream, key=key, **validated)
    for chunk in response:
        click.echo(chunk, nl=False)
    if logs_on() and not no_log:
        db = sqlite_utils.Database(logs_db_path())
        migrate(db)
        response.log_to_db(db)


def read_text(stream: BinaryIO) -> str:
    """A file's (or standard input's) text, decoded as UTF-8 with universal newlines; one clear error if it is
    not UTF-8, whatever the locale."""
    data = stream.read()
    try:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read()
    except UnicodeDecodeError as exc:
        name = getattr(stream, "name", "<stdin>")
        name = "standard input" if name in ("<stdin>", "-", 0) else name
        raise MistralSuiteError(
            f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}). Convert it to "
            "UTF-8 first (for example: iconv -f latin1 -t utf-8)."
        ) from None


def local_chat_model(name: str | None) -> "LocalChat | None":
    """The local (llama.cpp) model that ``name`` or its alias names, if it names one."""
    if not name:
        return None
    try:
        model = llm.get_model(name)
    except llm.UnknownModelError:
        return None
    return model if isinstance(model, LocalChat) else None


def split_at_cursor(text: str, cursor: str) -> tuple[str, str]:
    """Split ``text`` at ``N`` (the start of line N) or ``N:COL`` (before column COL), both 1-based."""
    match = re.fullmatch(r"(\d+)(?::(\d+))?", cursor.strip())
    if not match:
        raise click.BadParameter("use N or N:COL, e.g. --line 12:5", param_hint="--line")
    line, column = int(match.group(1)), int(match.group(2) or 1)
    lines = re.findall(r"[^\n]*\n|[^\n]+\Z", text)  # lines as editors count them: only "\n" ends one
    if not 1 <= line <= len(lines) + 1:
        raise click.BadParameter(f"the file has {len(lines)} lines", param_hint="--line")
    width = len((lines[line - 1] if line <= len(lines) else "").rstrip("\r\n"))
    if not 1 <= column <= width + 1:
        raise click.BadParameter(f"line {line} has {width} characters", param_hint="--line")
    offset = sum(len(item) for item in lines[: line - 1]) + column - 1
    return text[:offset], text[offset:]


@click.group(name="servers")
def servers_group() -> None:
    """OpenAI-compatible servers (llamafile, llama.cpp, Ollama, vLLM) as llm models."""


@servers_group.command(name="add")
@click.argument("name")
@click.argument("url")
@click.option("--model", help="Model name the server expects (default: the first one its /models lists)")
@click.option("--key-name", help="Name of the key in `llm keys` to send to this server")
@click.option("--alias", "aliases", multiple=True, help="Alias for the model (repeatable)")
@click.option("--embedding/--chat", default=None, help="Use the server's /embeddings endpoint with `llm embed` "
              "(default: chat)")
@click.option("--replace", is_flag=True, help="Forget the settings of an existing NAME that are not given again")
def servers_add(name: str, url: str, model: str | None, key_name: str | None, aliases: tuple[str, ...],
                embedding: bool | None, replace: bool) -> None:
    """Register the server at URL (such as http://127.0.0.1:8000/v1) as model NAME.

    Adding a NAME again changes what is given and keeps the other settings (model, key name, aliases,
    kind); --replace forgets them.
    """
    try:
        url = server_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    if name == LLAMAFILE.name or name in LLAMAFILE.aliases:
        raise click.BadParameter(f"{name} is built in; set LLM_LLAMAFILE_BASE_URL to move it", param_hint="NAME")
    aliases = tuple(dict.fromkeys(aliases))  # each once
    for wanted, what in [(name, "NAME"), *((alias, "--alias") for alias in aliases)]:
        if not plain_name(wanted):
            raise click.BadParameter(f"{wanted!r} is not a plain name: use letters, digits, '.', '_' and '-' "
                                     "(such as vllm-box)", param_hint=what)
    given = {"url": url, "model": model, "key_name": key_name, "aliases": list(aliases) or None,
             "embedding": embedding}

    def change(saved: dict) -> tuple[bool, dict, dict]:
        refuse_names_in_use(name, aliases)  # under the file's lock: two adds cannot both claim one alias
        existed = name in saved
        old = saved[name] if existed and isinstance(saved[name], dict) and not replace else {}
        entry = {field: value if value is not None else old.get(field) for field, value in given.items()}
        entry["aliases"] = entry["aliases"] or []
        entry["embedding"] = bool(entry["embedding"])
        saved[name] = entry
        return existed, old, entry

    existed, old, entry = update_json_object(servers_path(), change)
    kind = "embeddings" if entry["embedding"] else "chat"
    if not existed or replace:
        click.echo(f"{'Replaced' if existed else 'Added'} {name} ({kind}) at {shown_url(url)}")
        return
    kept = [f"{label} {shown}" for field, label, shown in (
        ("model", "model", entry["model"]), ("key_name", "key name", entry["key_name"]),
        ("aliases", "aliases", ", ".join(entry["aliases"])), ("embedding", "kind", kind),
    ) if given[field] is None and old.get(field)]
    click.echo(f"Updated {name} ({kind}) at {shown_url(url)}"
               + (f"; kept its {'; '.join(kept)} (--replace forgets them)" if kept else ""))


def refuse_names_in_use(name: str, aliases: tuple[str, ...]) -> None:
    """Refuse a server ``name`` or alias that already names another model (prompts for it must not be rerouted)."""
    taken = names_in_use(ignore=lambda model: getattr(getattr(model, "server", None), "name", None) == name)
    for wanted, what in [(name, "NAME"), *((alias, "--alias") for alias in aliases)]:
        owner = taken.get(wanted)
        if owner is not None:
            named = "a model's id" if owner == wanted else f"an alias of {owner}"
            raise click.BadParameter(f"{wanted!r} is already {named}, and prompts for it must not go to another "
                                     "server: choose another", param_hint=what)


@servers_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
def servers_list(as_json: bool) -> None:
    """List the servers llm can use."""
    servers = [server._replace(url=shown_url(server.url)) for server in load_servers()]
    if as_json:
        click.echo(json.dumps([{**server._asdict(), "aliases": list(server.aliases)} for server in servers], indent=2))
        return
    for server in servers:
        details = [server.url, "embeddings" if server.embedding else "chat"]
        details += [f"model {server.model}"] if server.model else []
        details += [f"key {server.key_name}"] if server.key_name else []
        details += [f"aliases {', '.join(server.aliases)}"] if server.aliases else []
        click.echo(f"{server.name}: " + ", ".join(details))


@servers_group.command(name="remove")
@click.argument("name")
def servers_remove(name: str) -> None:
    """Forget server NAME."""

    def change(saved: dict) -> None:
        if name not in saved:
            raise click.ClickException(f"No server named {name!r}; `llm mistral servers list` shows them.")
        del saved[name]

    update_json_object(servers_path(), change)
    click.echo(f"Removed {name}")
