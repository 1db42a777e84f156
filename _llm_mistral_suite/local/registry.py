"""Which GGUF files are local models: the suite's registry and llm-llama-cpp's, in llm's user directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import click
import llm

from ..catalog import names_in_use
from ..errors import MistralSuiteError
from ..storage import (
    OPTIONAL_FLAG,
    OPTIONAL_NAMES,
    OPTIONAL_TEXT,
    TEXT,
    entry_problem,
    plain_name,
    read_json_object,
    skip_entry,
    update_json_object,
    warn_once,
)

LOCAL_PREFIX = "mistral-local/"
LOCAL_REGISTRY_FILE = "mistral-suite-local.json"
T = TypeVar("T")

class LocalModelInfo:
    """One registered GGUF file."""

    __slots__ = ("name", "path", "aliases", "embedding", "source", "mmproj")

    def __init__(self, name: str, path: str, aliases: Iterable[str] = (), embedding: bool = False,
                 source: str = "suite", mmproj: str | None = None) -> None:
        self.name, self.path, self.aliases = name, path, tuple(aliases)
        self.embedding, self.source = embedding, source
        self.mmproj = mmproj  # the multimodal projector GGUF that gives the model images

    @property
    def model_id(self) -> str:
        return LOCAL_PREFIX + self.name


def local_registry_path() -> Path:
    """The suite's registry of GGUF files (``llm mistral local add``)."""
    return llm.user_dir() / LOCAL_REGISTRY_FILE


def llama_cpp_models_path() -> Path:
    """llm-llama-cpp's registry (``llm llama-cpp add-model`` / ``download-model`` write it)."""
    return llm.user_dir() / "llama-cpp" / "models.json"


REGISTRY_FIELDS = {  # the fields of an entry of the suite's registry, and what each may be
    "path": TEXT,
    "aliases": OPTIONAL_NAMES,
    "embedding": OPTIONAL_FLAG,
    "download": OPTIONAL_TEXT,
    "mmproj": OPTIONAL_TEXT,
}


def read_local_registry() -> dict[str, dict[str, Any]]:
    """The suite's registered GGUF files: name -> {"path", "aliases", "embedding", ...}; never raises: an entry
    that cannot be used is skipped with a warning naming the file and the entry."""
    path = local_registry_path()
    models = read_json_object(path).get("models", {})
    if not isinstance(models, dict):
        warn_once(path, '"models" is not an object; ignoring it. Fix or delete the file.')
        return {}
    usable = {}
    for name, entry in models.items():
        problem = entry_problem(entry, REGISTRY_FIELDS)
        if not problem and not plain_name(name, 200):
            problem = "is not a plain name (letters, digits, '.', '_' and '-')"
        if problem:
            skip_entry(path, f"model {name!r}", problem)
        else:
            usable[name] = entry
    return usable


def update_local_registry(change: Callable[[dict[str, Any]], T]) -> T:
    """Change the suite's registered GGUF files (name -> entry) under the file's lock; returns what ``change`` did."""
    path = local_registry_path()

    def change_models(data: dict[str, Any]) -> T:
        models = data.setdefault("models", {})
        if not isinstance(models, dict):
            raise MistralSuiteError(f'{path}: "models" is not an object; fix or delete the file.')
        return change(models)

    return update_json_object(path, change_models)


def llama_cpp_entries() -> dict[str, str]:
    """llm-llama-cpp's registered files: name -> path (GGUF or not); a bad entry is skipped with a warning."""
    path = llama_cpp_models_path()
    entries = {}
    for name, entry in read_json_object(path).items():
        problem = entry_problem(entry, {"path": TEXT})
        if problem:
            skip_entry(path, f"model {name!r}", problem)
        else:
            entries[name] = entry["path"]
    return entries


def local_models() -> list[LocalModelInfo]:
    """The suite's models, then llm-llama-cpp's GGUF files that the suite does not register itself."""
    suite = read_local_registry()
    result = [
        LocalModelInfo(name, entry["path"], entry.get("aliases") or (), bool(entry.get("embedding")),
                       mmproj=entry.get("mmproj"))
        for name, entry in suite.items()
    ]
    for name, file in llama_cpp_entries().items():
        if name in suite or not file.lower().endswith(".gguf"):
            continue  # llm-llama-cpp also lists GGML-era files llama.cpp no longer reads
        result.append(LocalModelInfo(name, file, (), False, "llm-llama-cpp"))
    return result


def local_models_dir() -> Path:
    """Where ``llm mistral local download`` puts GGUF files."""
    return llm.user_dir() / "mistral-local"


def checked_names(name: str, aliases: Iterable[str]) -> list[str]:
    """``aliases`` without repeats, once ``name`` and each of them is found usable as a model name."""
    aliases = list(dict.fromkeys(aliases))
    for wanted in (name, *aliases):
        if not plain_name(wanted, 200):
            raise MistralSuiteError(f"{wanted!r} is not a usable name: use letters, digits, '.', '_' and '-'.")
    return aliases


def add_local_model(name: str, path: Path, aliases: Iterable[str], *, embedding: bool = False,
                    extra: dict[str, Any] | None = None, strict_aliases: bool = True) -> list[str]:
    """Register ``path`` as ``mistral-local/<name>``; returns the aliases it got. Aliases that already
    name another model are an error (``strict_aliases``) or left out; that is checked under the registry's
    lock, so two adds at once cannot both claim one alias."""
    aliases = checked_names(name, aliases)
    model_id = LOCAL_PREFIX + name

    def register(models: dict[str, Any]) -> list[str]:
        existing = models.get(name)
        taken_path = existing.get("path") if isinstance(existing, dict) else None
        if isinstance(taken_path, str) and not _same_file(taken_path, path):
            raise MistralSuiteError(
                f"mistral-local/{name} is already registered ({taken_path}). "
                f"Choose another --name or run `llm mistral local remove {name}` first."
            )
        taken = names_in_use(ignore=lambda model: model.model_id == model_id)
        granted: list[str] = []
        for alias in aliases:
            owner = taken.get(alias)
            if owner is None:
                granted.append(alias)
            elif strict_aliases:
                raise MistralSuiteError(f"Alias {alias!r} already names {owner}; choose another alias.")
            else:
                click.echo(f"Note: alias {alias!r} already names {owner}; not using it.", err=True)
        entry: dict[str, Any] = {"path": str(path), "aliases": granted}
        if embedding:
            entry["embedding"] = True
        models[name] = entry | (extra or {})
        return granted

    return update_local_registry(register)


def _same_file(one: str, other: str | Path) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return os.path.abspath(one) == os.path.abspath(other)
