"""The catalog of Mistral's API models: what exists, what each can do, and what replaces a retired one."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

import llm

from .errors import MistralSuiteError
from .storage import (
    OPTIONAL_COUNT,
    OPTIONAL_FLAG,
    OPTIONAL_OBJECT,
    OPTIONAL_TEXT,
    TEXT,
    entry_problem,
    read_json_object,
    skip_entry,
    warn_once,
)

GA, DEPRECATED, RETIRED = "ga", "deprecated", "retired"

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
AUDIO_TYPES = frozenset({"audio/mpeg", "audio/wav", "audio/x-wav", "audio/flac", "audio/ogg", "audio/mp4"})
DOCUMENT_TYPES = frozenset({"application/pdf"})  # chat models with the "documents" capability read these


class CatalogEntry(NamedTuple):
    """One model of Mistral's API: its name on the wire, what it can do and whether it still runs."""

    api_name: str
    aliases: tuple[str, ...] = ()
    context: int | None = None
    capabilities: frozenset[str] = frozenset({"chat", "tools"})
    status: str = GA
    deprecation_date: str | None = None
    replacement: str | None = None
    local_route: str | None = None  # the open-weights model that still runs it: `llm mistral local download X`
    description: str = ""

    @property
    def model_id(self) -> str:
        return f"mistral/{self.api_name}"


def catalog_entry(api_name: str, *aliases: str, context: int, caps: str, **kwargs: Any) -> CatalogEntry:
    """A built-in entry: ``caps`` is a space-separated list of capabilities."""
    return CatalogEntry(api_name, tuple(aliases), context, frozenset(caps.split()), **kwargs)


# The lineup as documented in 2026-08; `llm mistral refresh` brings the service's own list.
BUILTIN_CATALOG: tuple[CatalogEntry, ...] = (
    catalog_entry("mistral-large-latest", "mistral-large", context=262144, caps="chat tools vision documents"),
    # Medium 3.5 and Small 4 reason when asked: reasoning_effort (docs.mistral.ai/capabilities/reasoning/adjustable).
    catalog_entry("mistral-medium-latest", "mistral-medium", context=262144, caps="chat tools vision documents reasoning"),
    catalog_entry("mistral-small-latest", "mistral-small", context=262144, caps="chat tools vision documents reasoning"),
    catalog_entry("codestral-latest", "codestral", context=131072, caps="chat tools fim"),
    catalog_entry("ministral-3b-latest", "ministral-3b", context=131072, caps="chat tools vision documents"),
    catalog_entry("ministral-8b-latest", "ministral-8b", context=131072, caps="chat tools vision documents"),
    catalog_entry("ministral-14b-latest", "ministral-14b", context=131072, caps="chat tools vision documents"),
    catalog_entry("magistral-medium-latest", "magistral-medium", context=131072, caps="chat tools reasoning",
           status=DEPRECATED, replacement="mistral-medium-latest"),
    catalog_entry("magistral-small-latest", "magistral-small", context=131072, caps="chat tools reasoning",
           status=DEPRECATED, replacement="mistral-small-latest"),
    catalog_entry("devstral-medium-latest", "devstral", "devstral-medium", context=131072, caps="chat tools"),
    catalog_entry("devstral-small-latest", "devstral-small", context=131072, caps="chat tools"),
    catalog_entry("pixtral-large-latest", "pixtral-large", context=131072, caps="chat tools vision documents",
           status=DEPRECATED, replacement="mistral-large-latest"),
    catalog_entry("voxtral-small-latest", "voxtral-small", context=32768, caps="chat tools audio"),
    catalog_entry("voxtral-mini-latest", "voxtral-mini", context=32768, caps="chat audio"),
    catalog_entry("open-mistral-nemo", "mistral-nemo", context=131072, caps="chat tools", local_route="mistral-nemo"),
    # The seed's open-weights models: retired from the API, alive as GGUF files and llamafiles.
    catalog_entry("open-mistral-7b", context=32768, caps="chat", status=RETIRED, deprecation_date="2025-03-30",
           replacement="ministral-8b-latest", local_route="mistral-7b", description="Mistral 7B"),
    catalog_entry("open-mixtral-8x7b", context=32768, caps="chat", status=RETIRED, deprecation_date="2025-03-30",
           replacement="mistral-small-latest", local_route="mixtral-8x7b", description="Mixtral 8x7B"),
    catalog_entry("open-mixtral-8x22b", context=65536, caps="chat tools", status=RETIRED,
           deprecation_date="2025-03-30", replacement="mistral-small-latest", local_route="mixtral-8x22b",
           description="Mixtral 8x22B"),
    catalog_entry("open-codestral-mamba", context=262144, caps="chat", status=RETIRED, deprecation_date="2025-06-06",
           replacement="codestral-latest", local_route="codestral-mamba", description="Codestral Mamba"),
    catalog_entry("mathstral-7b", context=32768, caps="chat", status=RETIRED, replacement="magistral-small-latest",
           local_route="mathstral-7b", description="Mathstral 7B (open weights only, never a GA API model)"),
    # llm-mistral's ids over the years (its DEFAULT_ALIASES; logs.db holds conversations under them, and
    # `llm -c` looks the model up by id). Retired ones: dates of Mistral's model pages; the ones it still lists
    # as deprecated are sent, and a 404 then names the successor.
    catalog_entry("mistral-tiny", "mistral-tiny", context=32768, caps="chat", status=RETIRED,
           deprecation_date="2025-03-30", replacement="ministral-8b-latest", local_route="mistral-7b",
           description="Mistral 7B (open-mistral-7b)"),
    catalog_entry("mistral-small", context=32768, caps="chat", status=DEPRECATED, replacement="mistral-small-latest",
           local_route="mixtral-8x7b", description="Mixtral 8x7B, the first mistral-small"),
    catalog_entry("mistral-small-2312", "mistral-small-2312", context=32768, caps="chat", status=RETIRED,
           deprecation_date="2025-03-30", replacement="mistral-small-latest", local_route="mixtral-8x7b",
           description="Mixtral 8x7B (open-mixtral-8x7b)"),
    catalog_entry("mistral-small-2402", "mistral-small-2402", context=32768, caps="chat tools", status=RETIRED,
           deprecation_date="2025-06-16", replacement="mistral-small-latest"),
    catalog_entry("mistral-small-2409", "mistral-small-2409", context=32768, caps="chat tools", status=DEPRECATED,
           replacement="mistral-small-latest"),
    catalog_entry("mistral-small-2501", "mistral-small-2501", context=32768, caps="chat tools", status=DEPRECATED,
           replacement="mistral-small-latest"),
    catalog_entry("mistral-medium", context=32768, caps="chat", status=DEPRECATED, replacement="mistral-medium-latest"),
    catalog_entry("mistral-medium-2312", "mistral-medium-2312", context=32768, caps="chat tools", status=RETIRED,
           deprecation_date="2025-06-16", replacement="mistral-medium-latest"),
    catalog_entry("mistral-medium-2505", "mistral-medium-2505", context=131072, caps="chat tools vision documents",
           status=DEPRECATED, replacement="mistral-medium-latest"),
    catalog_entry("magistral-small-2506", "magistral-small-2506", context=40960, caps="chat tools reasoning",
           status=DEPRECATED, replacement="mistral-small-latest"),
    catalog_entry("magistral-medium-2506", "magistral-medium-2506", context=40960, caps="chat tools reasoning",
           status=DEPRECATED, replacement="mistral-medium-latest"),
    catalog_entry("codestral-mamba-latest", "codestral-mamba", context=262144, caps="chat", status=RETIRED,
           deprecation_date="2025-06-06", replacement="codestral-latest", local_route="codestral-mamba",
           description="Codestral Mamba"),
    catalog_entry("pixtral-12b-latest", "pixtral-12b", context=131072, caps="chat tools vision documents", status=RETIRED,
           deprecation_date="2025-12-31", replacement="ministral-14b-latest", local_route="pixtral-12b",
           description="Pixtral 12B"),
    catalog_entry("pixtral-12b", context=131072, caps="chat tools vision documents", status=RETIRED,
           deprecation_date="2025-12-31", replacement="ministral-14b-latest", local_route="pixtral-12b",
           description="Pixtral 12B"),
    catalog_entry("voxtral-mini-2507", context=32768, caps="chat audio"),
    catalog_entry("voxtral-small-2507", context=32768, caps="chat tools audio"),
    # Embeddings (`llm embed`).
    catalog_entry("mistral-embed", "mistral-embed", context=8192, caps="embedding"),
    catalog_entry("codestral-embed", context=8192, caps="embedding"),
)

CAPABILITY_FLAGS = {  # card field of GET /v1/models -> our capability name
    "completion_chat": "chat",
    "function_calling": "tools",
    "vision": "vision",
    "audio": "audio",
    "reasoning": "reasoning",
    "completion_fim": "fim",
}


def catalog_cache_path() -> Path:
    return llm.user_dir() / "mistral-suite-models.json"


def llm_mistral_cache_path() -> Path:
    """llm-mistral's own copy of ``GET /v1/models``, if the user had that plugin: the ids it registered."""
    return llm.user_dir() / "mistral_models.json"


REASONING_ONLY_FAMILIES = ("magistral-",)  # every version reasons, whatever its card says


def family_entry(card: dict[str, Any], builtin: dict[str, CatalogEntry]) -> CatalogEntry | None:
    """The built-in model a card is a version of: one its ``aliases`` name, or ``<name>-latest`` for a dated
    ``<name>-YYMM`` (``magistral-medium-2509`` is a Magistral Medium: a reasoning model)."""
    names = [alias for alias in card.get("aliases") or () if isinstance(alias, str)]
    names.append(re.sub(r"-\d{4}$", "-latest", card["id"]))
    return next((builtin[name] for name in names if name in builtin), None)


def entry_from_card(card: dict[str, Any], builtin: CatalogEntry | None, family: CatalogEntry | None = None) -> CatalogEntry:
    """A catalog entry from one card of ``GET /v1/models``, merged with what the built-in catalog knows.

    The card adds the capabilities it claims; it never takes away those the built-in entry (or, for a
    version of a built-in model, its ``family``) knows: cards often say nothing of, or deny, reasoning or
    vision that the model has. One exception: a dated version that denies reasoning, of a line that only
    learnt it lately (Mistral Small and Medium), does not reason. Built-in aliases, routes and replacements
    are kept."""
    flags = card.get("capabilities")
    said = {ours for flag, ours in CAPABILITY_FLAGS.items() if flags.get(flag)} if flags is not None else None
    known = set((builtin or family or CatalogEntry(card["id"], capabilities=frozenset())).capabilities)
    if builtin is None and family is not None and (flags or {}).get("reasoning") is False \
            and not family.api_name.startswith(REASONING_ONLY_FAMILIES):
        known.discard("reasoning")  # an older version of a line that reasons today: mistral-small-2506
    caps = known | (said if said is not None else (set() if builtin or family else {"chat", "tools"}))
    if "vision" in caps:
        caps.add("documents")  # Mistral's vision models read PDFs as document_url chunks
    if "embed" in card["id"]:
        caps = {"embedding"}
    deprecation = card.get("deprecation")
    status = GA
    if deprecation:
        status = RETIRED if str(deprecation)[:10] <= datetime.date.today().isoformat() else DEPRECATED
    if card.get("archived"):
        status = RETIRED
    base = builtin or CatalogEntry(card["id"])
    return base._replace(
        context=card.get("max_context_length") or base.context or (family.context if family else None),
        capabilities=frozenset(caps),
        status=status,
        deprecation_date=str(deprecation)[:10] if deprecation else None,
        replacement=card.get("deprecation_replacement_model") or base.replacement,
        description=card.get("description") or base.description,
    )


CARD_FIELDS = {  # the fields of a cached card that we read, and what each may be
    "id": TEXT,
    "max_context_length": OPTIONAL_COUNT,
    "capabilities": OPTIONAL_OBJECT,
    "deprecation": OPTIONAL_TEXT,
    "deprecation_replacement_model": OPTIONAL_TEXT,
    "description": OPTIONAL_TEXT,
    "archived": OPTIONAL_FLAG,
}
FLAG_CLASSES = (bool, type(None))


def card_problem(card: Any) -> str | None:
    """What is wrong with one cached model card (None: nothing)."""
    problem = entry_problem(card, CARD_FIELDS)
    capabilities = None if problem else card.get("capabilities")
    if capabilities:
        for flag in CAPABILITY_FLAGS:
            if capabilities.get(flag).__class__ not in FLAG_CLASSES:
                return f'has a bad "capabilities" ("{flag}": {json.dumps(capabilities.get(flag))[:40]})'
    return problem


def valid_cards(path: Path, warn: bool = True) -> list[dict[str, Any]]:
    """The model cards of a cached ``GET /v1/models`` answer that we can read; a bad one is skipped, with a
    warning naming the file and the card when the file is ours (``warn``)."""
    cards = read_json_object(path).get("data", [])
    if not isinstance(cards, list):
        if warn:
            warn_once(path, '"data" is not a list of models; ignoring it. Run `llm mistral refresh` to fetch it again.')
        return []
    valid = []
    for number, card in enumerate(cards):
        problem = card_problem(card)
        if problem is None:
            valid.append(card)
        elif warn:
            named = isinstance(card, dict) and isinstance(card.get("id"), str) and card["id"].strip()
            skip_entry(path, f"model {card['id']!r}" if named else f"card {number}", problem)
    return valid


def load_catalog() -> list[CatalogEntry]:
    """The built-in catalog, updated by the cache of ``llm mistral refresh`` and completed by the ids of
    llm-mistral's cache (old data: it adds models, never changes known ones); never raises."""
    builtin = {entry.api_name: entry for entry in BUILTIN_CATALOG}
    entries = dict(builtin)
    for path, ours in ((llm_mistral_cache_path(), False), (catalog_cache_path(), True)):
        for card in valid_cards(path, warn=ours):
            if not ours and card["id"] in entries:
                continue
            entries[card["id"]] = entry_from_card(card, builtin.get(card["id"]), family_entry(card, builtin))
    return list(entries.values())


def find_entry(name: str) -> CatalogEntry | None:
    """A catalog entry by API name, model id or alias."""
    name = name.removeprefix("mistral/")
    for entry in load_catalog():
        if name == entry.api_name or name in entry.aliases:
            return entry
    return None


def names_in_use(ignore: Callable[[Any], bool] = lambda model: False) -> dict[str, str]:
    """Every model id and alias llm knows now (chat and embedding models, every plugin's, and ``llm aliases``),
    mapped to the model id it names, leaving out the models ``ignore`` says are the one being added again: a new
    model or alias must not take one over. An error, naming the cause, if llm cannot list them (another plugin
    failing to register): a check that cannot run must not let any name through."""
    taken: dict[str, str] = {}
    try:
        for getter in (llm.get_models_with_aliases, llm.get_embedding_models_with_aliases):
            for item in getter():
                model = getattr(item, "model", None) or getattr(item, "async_model", None)
                if model is not None and not ignore(model):
                    for name in (model.model_id, *item.aliases):
                        taken[name] = model.model_id
    except Exception as exc:  # noqa: BLE001 - whatever another plugin raises
        raise MistralSuiteError(
            f"Cannot check that no other model already has this name or alias: listing llm's models failed "
            f"({type(exc).__name__}: {exc}). Fix or uninstall the plugin that fails (`llm plugins` lists them), "
            "then try again."
        ) from None
    return taken
