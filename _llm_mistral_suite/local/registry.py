"""Which GGUF files are local models: the suite's registry and llm-llama-cpp's, in llm's user directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import click
import llm

from ..errors import MistralSuiteError
from ..storage import read_json_object, write_json_atomic

LOCAL_PREFIX = "mistral-local/"
LOCAL_REGISTRY_FILE = "mistral-suite-local.json"

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


def read_local_registry() -> dict[str, dict[str, Any]]:
    """The suite's registered GGUF files: name -> {"path", "aliases", "embedding", ...}; never raises."""
    models = read_json_object(local_registry_path()).get("models")
    if not isinstance(models, dict):
        return {}
    return {name: entry for name, entry in models.items() if isinstance(entry, dict) and entry.get("path")}


def write_local_registry(models: dict[str, dict[str, Any]]) -> None:
    """Replace the suite's registered GGUF files with ``models``."""
    write_json_atomic(local_registry_path(), {"models": models})


def local_models() -> list[LocalModelInfo]:
    """The suite's models, then llm-llama-cpp's GGUF files that the suite does not register itself."""
    suite = read_local_registry()
    result = [
        LocalModelInfo(name, str(entry["path"]),
                       [a for a in entry.get("aliases") or () if isinstance(a, str)],
                       bool(entry.get("embedding")),
                       mmproj=entry["mmproj"] if isinstance(entry.get("mmproj"), str) else None)
        for name, entry in suite.items()
    ]
    for name, entry in read_json_object(llama_cpp_models_path()).items():
        if name in suite or not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue
        if not entry["path"].lower().endswith(".gguf"):
            continue  # llm-llama-cpp also lists GGML-era files llama.cpp no longer reads
        result.append(LocalModelInfo(name, entry["path"], (), False, "llm-llama-cpp"))
    return result



def local_models_dir() -> Path:
    """Where ``llm mistral local download`` puts GGUF files."""
    return llm.user_dir() / "mistral-local"


def add_local_model(name: str, path: Path, aliases: Iterable[str], *, embedding: bool = False,
                    extra: dict[str, Any] | None = None, strict_aliases: bool = True) -> list[str]:
    """Register ``path`` as ``mistral-local/<name>``; returns the aliases it got. Aliases that already
    name another model are an error (``strict_aliases``) or left out."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise MistralSuiteError(f"{name!r} is not a usable name: use letters, digits, '.', '_' and '-'.")
    taken: dict[str, str] = {}
    try:
        for alias, model in llm.get_model_aliases().items():
            taken[alias] = model.model_id
        for alias, model in llm.get_embedding_model_aliases().items():
            taken[alias] = model.model_id
    except Exception:
        pass
    model_id = LOCAL_PREFIX + name
    granted: list[str] = []
    for alias in dict.fromkeys(aliases):
        owner = taken.get(alias)
        if owner is not None and owner != model_id:
            if strict_aliases:
                raise MistralSuiteError(f"Alias {alias!r} already names {owner}; choose another alias.")
            click.echo(f"Note: alias {alias!r} already names {owner}; not using it.", err=True)
            continue
        granted.append(alias)
    models = read_local_registry()
    entry: dict[str, Any] = {"path": str(path), "aliases": granted}
    if embedding:
        entry["embedding"] = True
    entry.update(extra or {})
    models[name] = entry
    write_local_registry(models)
    return granted
