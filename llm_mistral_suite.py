"""Every Mistral model in llm: Mistral's API, local GGUF files and OpenAI-compatible servers.

The module reads in the order data flows:

1. Model catalog: what exists, built in and refreshed from ``GET /v1/models``.
2. Hooks: how llm discovers models and commands (cheap, offline, never raising).
3. HTTP transport: one reused client, retries with backoff and ``Retry-After``, SSE reading.
4. Translation: llm's ``prompt.messages`` to OpenAI-style chat messages, and chunks back to events.
5. Model classes: Mistral API chat; 5b embeddings; 5c Codestral fill-in-the-middle; 5d llamafile and
   other OpenAI-compatible servers; 5e local GGUF models through llama.cpp.
6. Commands: ``llm mistral models|refresh|fim|servers|local``.

Heavy imports (httpx, httpx_sse) happen inside the functions that use them: every ``llm``
command imports this module, so its import must stay cheap.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import random
import re
import string
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Iterator, Literal, NamedTuple, Optional, Union

import click
import llm
from llm.parts import StreamEvent
from pydantic import ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import httpx


# ---------------------------------------------------------------------------------------------
# 1. Model catalog
# ---------------------------------------------------------------------------------------------

GA, DEPRECATED, RETIRED = "ga", "deprecated", "retired"

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
AUDIO_TYPES = frozenset({"audio/mpeg", "audio/wav", "audio/x-wav", "audio/flac", "audio/ogg", "audio/mp4"})


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


def _entry(api_name: str, *aliases: str, context: int, caps: str, **kwargs: Any) -> CatalogEntry:
    return CatalogEntry(api_name, tuple(aliases), context, frozenset(caps.split()), **kwargs)


# The lineup as documented in 2026-08; `llm mistral refresh` brings the service's own list.
BUILTIN_CATALOG: tuple[CatalogEntry, ...] = (
    _entry("mistral-large-latest", "mistral-large", context=262144, caps="chat tools vision"),
    _entry("mistral-medium-latest", "mistral-medium", context=262144, caps="chat tools vision"),
    _entry("mistral-small-latest", "mistral-small", context=262144, caps="chat tools vision"),
    _entry("codestral-latest", "codestral", context=131072, caps="chat tools fim"),
    _entry("ministral-3b-latest", "ministral-3b", context=131072, caps="chat tools vision"),
    _entry("ministral-8b-latest", "ministral-8b", context=131072, caps="chat tools vision"),
    _entry("ministral-14b-latest", "ministral-14b", context=131072, caps="chat tools vision"),
    _entry("magistral-medium-latest", "magistral-medium", context=131072, caps="chat tools reasoning",
           status=DEPRECATED, replacement="mistral-medium-latest"),
    _entry("magistral-small-latest", "magistral-small", context=131072, caps="chat tools reasoning",
           status=DEPRECATED, replacement="mistral-small-latest"),
    _entry("devstral-medium-latest", "devstral", "devstral-medium", context=131072, caps="chat tools"),
    _entry("devstral-small-latest", "devstral-small", context=131072, caps="chat tools"),
    _entry("pixtral-large-latest", "pixtral-large", context=131072, caps="chat tools vision",
           status=DEPRECATED, replacement="mistral-large-latest"),
    _entry("voxtral-small-latest", "voxtral-small", context=32768, caps="chat tools audio"),
    _entry("voxtral-mini-latest", "voxtral-mini", context=32768, caps="chat audio"),
    _entry("open-mistral-nemo", "mistral-nemo", context=131072, caps="chat tools", local_route="mistral-nemo"),
    # The seed's open-weights models: retired from the API, alive as GGUF files and llamafiles.
    _entry("open-mistral-7b", context=32768, caps="chat", status=RETIRED, deprecation_date="2025-03-30",
           replacement="ministral-8b-latest", local_route="mistral-7b", description="Mistral 7B"),
    _entry("open-mixtral-8x7b", context=32768, caps="chat", status=RETIRED, deprecation_date="2025-03-30",
           replacement="mistral-small-latest", local_route="mixtral-8x7b", description="Mixtral 8x7B"),
    _entry("open-mixtral-8x22b", context=65536, caps="chat tools", status=RETIRED,
           deprecation_date="2025-03-30", replacement="mistral-small-latest", local_route="mixtral-8x22b",
           description="Mixtral 8x22B"),
    _entry("open-codestral-mamba", context=262144, caps="chat", status=RETIRED, deprecation_date="2025-06-06",
           replacement="codestral-latest", description="Codestral Mamba"),
    _entry("mathstral-7b", context=32768, caps="chat", status=RETIRED, replacement="magistral-small-latest",
           local_route="mathstral-7b", description="Mathstral 7B (open weights only, never a GA API model)"),
    # Embeddings (`llm embed`).
    _entry("mistral-embed", "mistral-embed", context=8192, caps="embedding"),
    _entry("codestral-embed", context=8192, caps="embedding"),
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


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file of ours; ``{}`` when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, so an interrupted write never leaves a broken file behind."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


def entry_from_card(card: dict[str, Any], builtin: CatalogEntry | None) -> CatalogEntry:
    """A catalog entry from one card of ``GET /v1/models``, keeping built-in aliases and routes."""
    caps = {ours for flag, ours in CAPABILITY_FLAGS.items() if (card.get("capabilities") or {}).get(flag)}
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
        context=card.get("max_context_length") or base.context,
        capabilities=frozenset(caps) or base.capabilities,
        status=status,
        deprecation_date=str(deprecation)[:10] if deprecation else None,
        replacement=card.get("deprecation_replacement_model") or base.replacement,
        description=card.get("description") or base.description,
    )


def load_catalog() -> list[CatalogEntry]:
    """The built-in catalog updated by the cache of ``llm mistral refresh``; never raises."""
    entries = {entry.api_name: entry for entry in BUILTIN_CATALOG}
    cards = _read_json_object(catalog_cache_path()).get("data")
    for card in cards if isinstance(cards, list) else ():
        try:
            entries[card["id"]] = entry_from_card(card, entries.get(card["id"]))
        except (KeyError, TypeError, AttributeError):
            continue  # a card we cannot read is skipped, never fatal
    return list(entries.values())


def find_entry(name: str) -> CatalogEntry | None:
    """A catalog entry by API name, model id or alias."""
    name = name.removeprefix("mistral/")
    for entry in load_catalog():
        if name == entry.api_name or name in entry.aliases:
            return entry
    return None


def alternatives(entry: CatalogEntry) -> str:
    """What still runs a model the API no longer serves: its successor and the local route."""
    routes = []
    if entry.replacement:
        routes.append(f"use {entry.replacement} on the API (llm -m mistral/{entry.replacement})")
    if entry.local_route:
        routes.append(
            f"run {entry.description or entry.api_name} yourself: `llm mistral local download {entry.local_route}`"
            " (llama.cpp) or a llamafile (`llm -m llamafile`)"
        )
    return "Instead, " + "; or ".join(routes) + "."


def retired_message(entry: CatalogEntry) -> str:
    when = f" on {entry.deprecation_date}" if entry.deprecation_date else ""
    return f"{entry.api_name} was retired from Mistral's API{when}. {alternatives(entry)}"


# ---------------------------------------------------------------------------------------------
# 2. Hooks
# ---------------------------------------------------------------------------------------------


@llm.hookimpl
def register_models(register: Any) -> None:
    try:
        for entry in load_catalog():
            if "chat" in entry.capabilities:
                register(MistralChat(entry), AsyncMistralChat(entry), aliases=entry.aliases)
        register(CodestralFIM(), AsyncCodestralFIM(), aliases=("codestral-fim",))
        for server in load_servers():
            if not server.embedding:
                register(ServerChat(server), AsyncServerChat(server), aliases=server.aliases)
    except Exception:  # never break every `llm` command for one plugin's sake
        pass
    register_local_models(register)


@llm.hookimpl
def register_embedding_models(register: Any) -> None:
    try:
        for model, aliases in embedding_models():
            register(model, aliases=aliases)
        for server in load_servers():
            if server.embedding:
                register(ServerEmbedding(server), aliases=server.aliases)
    except Exception:  # never break every `llm` command for one plugin's sake
        pass
    register_local_embedding_models(register)


@llm.hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(mistral_group)


# ---------------------------------------------------------------------------------------------
# 3. HTTP transport
# ---------------------------------------------------------------------------------------------


class MistralSuiteError(llm.ModelError, click.ClickException):
    """A failure the user can act on; llm and click show it as one ``Error: ...`` line."""

    def __init__(self, message: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status  # the HTTP status behind it, if any
        self.detail = detail  # the service's own words, if any


class MissingKeyError(MistralSuiteError, llm.NeedsKeyException):
    """No API key was found."""


class StreamCutError(MistralSuiteError):
    """The server stopped sending before the reply was complete."""


RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0  # seconds; a longer wait is reported instead of slept through


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


class Endpoint(NamedTuple):
    """A server the plugin talks to, and how to explain its failures to the user."""

    base_url: str
    label: str
    key_hint: str = ""
    start_hint: str = ""
    retry_refused: bool = True  # False for local servers: "connection refused" means "not started"

    def headers(self, key: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers


def mistral_endpoint() -> Endpoint:
    return Endpoint(
        base_url=(os.environ.get("LLM_MISTRAL_BASE_URL") or "https://api.mistral.ai/v1").rstrip("/"),
        label="Mistral's API",
        key_hint="Set a valid key with `llm keys set mistral` or the LLM_MISTRAL_KEY environment variable "
        "(keys: https://console.mistral.ai/api-keys).",
        start_hint="Check your network connection, or LLM_MISTRAL_BASE_URL if you set it.",
    )


def timeout_seconds() -> float:
    return _env_float("LLM_MISTRAL_TIMEOUT", 300.0)


def max_attempts() -> int:
    return max(1, int(_env_float("LLM_MISTRAL_MAX_ATTEMPTS", 5)))


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: ``Retry-After`` if given, else full-jitter backoff."""
    if retry_after is not None:
        return retry_after
    base = _env_float("LLM_MISTRAL_BACKOFF", 1.0)
    return random.uniform(0, min(30.0, base * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def service_message(body: bytes) -> str:
    """The human part of an error body, whatever its shape (bodies vary between services and statuses)."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500]
    for _ in range(3):  # {"message": {"detail": [...]}}, {"error": {"message": ...}}, ...
        if isinstance(data, dict):
            data = data.get("message") or data.get("detail") or data.get("error") or data.get("msg") or ""
        elif isinstance(data, str) and data.startswith(("{", "[")):
            try:
                data = json.loads(data)
            except ValueError:
                break
    if isinstance(data, list):
        return "; ".join(
            ".".join(str(p) for p in item.get("loc", ())[1:]) + f": {item.get('msg', '')}"
            if isinstance(item, dict)
            else str(item)
            for item in data
        )
    return str(data)[:500]


def http_error(endpoint: Endpoint, status: int, body: bytes, attempts: int, key: str | None) -> MistralSuiteError:
    """One clear error for an HTTP failure status."""
    detail = service_message(body.replace(key.encode(), b"[key]") if key else body)  # before truncating
    suffix = f": {detail}" if detail else ""
    if status == 401:
        message = f"{endpoint.label} rejected the API key (401 Unauthorized). {endpoint.key_hint}".strip()
    elif status == 403:
        message = f"{endpoint.label} refused the request (403 Forbidden){suffix}. Your plan may not include this."
    elif status == 404:
        message = (
            f"{endpoint.label} answered 404 Not Found{suffix}. The model may be retired or misspelled: "
            "`llm mistral refresh` updates the model list and `llm mistral models` shows it."
        )
    elif status in RETRYABLE_STATUSES:
        what = "rate limit (429)" if status == 429 else f"server error ({status})"
        message = f"{endpoint.label} kept answering with a {what} after {attempts} attempts{suffix}. Try again later."
    else:
        message = f"{endpoint.label} rejected the request ({status}){suffix}"
    return MistralSuiteError(redact(message, key), status=status, detail=redact(detail, key))


def connection_error(endpoint: Endpoint, exc: Exception, attempts: int) -> MistralSuiteError:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        what = f"did not answer within {timeout_seconds():g} s (LLM_MISTRAL_TIMEOUT)"
    elif isinstance(exc, httpx.ConnectError):
        what = f"is not reachable at {endpoint.base_url} ({exc or type(exc).__name__})"
    else:
        what = f"dropped the connection ({exc or type(exc).__name__})"
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return MistralSuiteError(f"{endpoint.label} {what}{tries}. {endpoint.start_hint}".strip())


def _transport_failure(endpoint: Endpoint, exc: Exception, attempt: int) -> "_Retry":
    """The retry for a connection failure, or the final error when retrying cannot help."""
    import httpx

    error = connection_error(endpoint, exc, attempt)
    if isinstance(exc, httpx.ConnectError) and not endpoint.retry_refused:
        raise error
    return _Retry(error)


def redact(text: str, key: str | None) -> str:
    return text.replace(key, "[key]") if key else text


_sync_client: Optional["httpx.Client"] = None
_async_client: Optional[tuple[Any, "httpx.AsyncClient"]] = None  # (event loop, client)


def _client_settings() -> dict[str, Any]:
    import httpx

    return {
        "timeout": httpx.Timeout(timeout_seconds(), connect=min(10.0, timeout_seconds())),
        "limits": httpx.Limits(max_connections=32, max_keepalive_connections=16),
        "headers": {"User-Agent": "llm-mistral-suite"},
    }


def sync_client() -> "httpx.Client":
    """The process's one HTTP client, created on first use (keeps connections alive between calls)."""
    global _sync_client
    if _sync_client is None:
        import httpx

        _sync_client = httpx.Client(**_client_settings())
    return _sync_client


def async_client() -> "httpx.AsyncClient":
    """The async client of the running event loop (an ``httpx.AsyncClient`` is bound to its loop;
    the CLI runs each async prompt in a new one)."""
    global _async_client
    import asyncio

    import httpx

    loop = asyncio.get_running_loop()
    if _async_client is None or _async_client[0] is not loop or _async_client[1].is_closed:
        _async_client = (loop, httpx.AsyncClient(**_client_settings()))
    return _async_client[1]


class Pace:
    """Shared by the concurrent workers of one job (an embedding batch), so that a 429 slows them all.

    Every worker waits out ``Retry-After``, and the number of requests in flight halves (it grows back
    by one per success). A short ``Retry-After`` also teaches a least gap between request starts: the
    time from the start of the last request that succeeded to the moment the server allows the next.
    Without it, requests released together after a wait meet the limit again together, every time,
    until one runs out of attempts (a free-tier account allows about one request a second). The gap
    halves after every ``ceiling`` successes in a row, so a passing 429 costs a few slow requests, not
    the rest of the job; a long ``Retry-After`` (a per-minute quota) is waited out, not made a gap.
    """

    MAX_GAP = 5.0  # seconds

    def __init__(self, limit: int) -> None:
        import threading

        self.limit = self.ceiling = max(1, limit)
        self.active = 0
        self.not_before = 0.0
        self.gap = 0.0
        self.streak = 0  # successes since the last 429
        self.last_start = float("-inf")  # of any request
        self.last_ok: float | None = None  # start of the latest request that succeeded
        self.mine = threading.local()  # this thread's current request start
        self.condition = threading.Condition()

    def __enter__(self) -> "Pace":
        with self.condition:
            while True:
                now = time.monotonic()
                wait = max(self.not_before, self.last_start + self.gap) - now
                if self.active < self.limit and wait <= 0:
                    break
                self.condition.wait(timeout=wait if wait > 0 else None)
            self.active += 1
            self.last_start = self.mine.start = now
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self.condition:
            self.active -= 1
            if exc_info[0] is None:
                self.last_ok = max(self.last_ok or self.mine.start, self.mine.start)
                self.streak += 1
                if self.gap and self.streak >= self.ceiling:
                    self.streak, self.gap = 0, (self.gap / 2 if self.gap > 0.02 else 0.0)
                if self.limit < self.ceiling:
                    self.limit += 1
            self.condition.notify_all()

    def slow_down(self, delay: float) -> None:
        with self.condition:
            start = getattr(self.mine, "start", time.monotonic())
            allowed = start + delay  # Retry-After counts from when the server saw the request
            since = self.last_ok if self.last_ok is not None and self.last_ok <= start else start
            if allowed - since <= self.MAX_GAP:
                self.gap = max(self.gap, (allowed - since) * 1.05)
            self.streak = 0
            self.not_before = max(self.not_before, time.monotonic() + delay)
            self.limit = max(1, self.limit // 2)
            self.condition.notify_all()


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, error: MistralSuiteError, retry_after: float | None = None) -> None:
        self.error, self.retry_after = error, retry_after


def _check_status(endpoint: Endpoint, response: "httpx.Response", body: bytes, attempt: int, key: str | None) -> None:
    """Raise ``_Retry`` or the final error for a failure status."""
    error = http_error(endpoint, response.status_code, body, attempt, key)
    if response.status_code in RETRYABLE_STATUSES:
        raise _Retry(error, parse_retry_after(response.headers.get("retry-after")))
    raise error


def _next_wait(endpoint: Endpoint, retry: _Retry, attempt: int) -> float:
    """How long to sleep before the next attempt, or raise when no attempt is left."""
    if attempt >= max_attempts():
        raise retry.error
    delay = backoff_delay(attempt, retry.retry_after)
    if delay > MAX_RETRY_AFTER:
        raise MistralSuiteError(f"{retry.error.message} The server asked to wait {delay:.0f} s before retrying.")
    return delay


def request_json(
    endpoint: Endpoint, method: str, path: str, key: str | None, body: Any = None, pace: Pace | None = None
) -> Any:
    """One JSON request with retries; returns the decoded JSON answer.

    With a ``pace``, waits are shared with the other workers of the same job instead of slept alone.
    """
    import contextlib

    import httpx

    client = sync_client()
    for attempt in range(1, max_attempts() + 1):
        try:
            with pace or contextlib.nullcontext():
                try:
                    response = client.request(
                        method, endpoint.base_url + path, json=body, headers=endpoint.headers(key)
                    )
                except httpx.TransportError as exc:
                    raise _transport_failure(endpoint, exc, attempt) from None
                if response.status_code >= 400:
                    _check_status(endpoint, response, response.content, attempt, key)
                return decode_json(endpoint, response.content, key)
        except _Retry as retry:
            delay = _next_wait(endpoint, retry, attempt)
            if pace is None:
                time.sleep(delay)
            else:
                pace.slow_down(delay)
    raise AssertionError("unreachable")


async def arequest_json(endpoint: Endpoint, method: str, path: str, key: str | None, body: Any = None) -> Any:
    """Async twin of ``request_json``."""
    import asyncio

    import httpx

    client = async_client()
    for attempt in range(1, max_attempts() + 1):
        try:
            try:
                response = await client.request(
                    method, endpoint.base_url + path, json=body, headers=endpoint.headers(key)
                )
            except httpx.TransportError as exc:
                raise _transport_failure(endpoint, exc, attempt) from None
            if response.status_code >= 400:
                _check_status(endpoint, response, response.content, attempt, key)
            return decode_json(endpoint, response.content, key)
        except _Retry as retry:
            await asyncio.sleep(_next_wait(endpoint, retry, attempt))
    raise AssertionError("unreachable")


def decode_json(endpoint: Endpoint, raw: bytes | str, key: str | None = None) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        raise MistralSuiteError(f"{endpoint.label} sent something that is not JSON: {redact(text, key)[:200]!r}") from None


def decode_event(endpoint: Endpoint, data: str, key: str | None = None) -> dict[str, Any]:
    """One SSE data payload as a chunk dict; an error event or a malformed chunk is an error."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise MistralSuiteError(f"{endpoint.label} sent a malformed stream chunk: {redact(data, key)[:200]!r}") from None
    if chunk.__class__ is not dict or "choices" not in chunk:
        if isinstance(chunk, dict) and (chunk.get("object") == "error" or "error" in chunk):
            raise MistralSuiteError(f"{endpoint.label} reported an error mid-stream: {service_message(redact(data, key).encode())}")
        raise MistralSuiteError(f"{endpoint.label} sent a malformed stream chunk: {redact(data, key)[:200]!r}")
    return chunk


def stream_chunks(endpoint: Endpoint, path: str, key: str | None, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """POST a streaming request and yield its chunks; retries until the first chunk, never after."""
    import httpx
    from httpx_sse import EventSource

    client = sync_client()
    headers = endpoint.headers(key) | {"Accept": "text/event-stream"}
    for attempt in range(1, max_attempts() + 1):
        started = False
        try:
            request = client.build_request("POST", endpoint.base_url + path, json=body, headers=headers)
            try:
                response = client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise _transport_failure(endpoint, exc, attempt) from None
            try:
                if response.status_code >= 400:
                    _check_status(endpoint, response, response.read(), attempt, key)
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    yield decode_json(endpoint, response.read(), key)  # a server that ignored "stream": true
                    return
                for event in EventSource(response).iter_sse():
                    data = event.data
                    if data == "[DONE]":
                        return
                    if not data:
                        continue
                    chunk = decode_event(endpoint, data, key)
                    started = True
                    yield chunk
                return  # ended without [DONE]: the decoder judges by finish_reason
            except httpx.TransportError as exc:
                if started:
                    raise StreamCutError(
                        f"{endpoint.label} dropped the connection in the middle of the reply ({exc or type(exc).__name__}); "
                        "the text so far is incomplete. Try again."
                    ) from None
                raise _transport_failure(endpoint, exc, attempt) from None
            finally:
                response.close()
        except _Retry as retry:
            time.sleep(_next_wait(endpoint, retry, attempt))


async def astream_chunks(
    endpoint: Endpoint, path: str, key: str | None, body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """Async twin of ``stream_chunks``."""
    import asyncio

    import httpx
    from httpx_sse import EventSource

    client = async_client()
    headers = endpoint.headers(key) | {"Accept": "text/event-stream"}
    for attempt in range(1, max_attempts() + 1):
        started = False
        try:
            request = client.build_request("POST", endpoint.base_url + path, json=body, headers=headers)
            try:
                response = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise _transport_failure(endpoint, exc, attempt) from None
            try:
                if response.status_code >= 400:
                    _check_status(endpoint, response, await response.aread(), attempt, key)
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    yield decode_json(endpoint, await response.aread(), key)
                    return
                async for event in EventSource(response).aiter_sse():
                    data = event.data
                    if data == "[DONE]":
                        return
                    if not data:
                        continue
                    chunk = decode_event(endpoint, data, key)
                    started = True
                    yield chunk
                return
            except httpx.TransportError as exc:
                if started:
                    raise StreamCutError(
                        f"{endpoint.label} dropped the connection in the middle of the reply ({exc or type(exc).__name__}); "
                        "the text so far is incomplete. Try again."
                    ) from None
                raise _transport_failure(endpoint, exc, attempt) from None
            finally:
                await response.aclose()
        except _Retry as retry:
            await asyncio.sleep(_next_wait(endpoint, retry, attempt))


# ---------------------------------------------------------------------------------------------
# 4. Translation: llm messages <-> OpenAI-style chat messages and chunks
# ---------------------------------------------------------------------------------------------

_ID_ALPHABET = string.ascii_letters + string.digits


def wire_tool_call_id(tool_call_id: str | None) -> str:
    """A tool call id Mistral accepts (exactly 9 of [A-Za-z0-9]), stable for the same llm id."""
    if tool_call_id and len(tool_call_id) == 9 and tool_call_id.isascii() and tool_call_id.isalnum():
        return tool_call_id
    number = int.from_bytes(hashlib.sha256((tool_call_id or "").encode()).digest()[:8], "big")
    chars = []
    for _ in range(9):
        number, index = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[index])
    return "".join(chars)


def attachment_chunk(attachment: llm.Attachment) -> dict[str, Any]:
    mime = attachment.resolve_type()
    if mime in AUDIO_TYPES:
        return {"type": "input_audio", "input_audio": attachment.base64_content()}
    url = attachment.url or f"data:{mime};base64,{attachment.base64_content()}"
    return {"type": "image_url", "image_url": {"url": url}}


def chat_messages(prompt: llm.Prompt, *, thinking: bool) -> list[dict[str, Any]]:
    """OpenAI-style messages for the whole conversation in ``prompt.messages``.

    ``thinking`` keeps reasoning parts as Mistral ``thinking`` chunks on assistant turns (reasoning
    models need their thinking back); servers that do not take them get the answer text only.
    """
    from llm.parts import AttachmentPart, ReasoningPart, TextPart, ToolCallPart, ToolResultPart

    messages: list[dict[str, Any]] = []
    for message in prompt.messages:
        role = message.role
        if role == "tool":
            for part in message.parts:
                if isinstance(part, ToolResultPart):
                    output = part.output if not part.exception else f"Error: {part.exception}"
                    messages.append(
                        {"role": "tool", "content": output, "tool_call_id": wire_tool_call_id(part.tool_call_id),
                         "name": part.name}
                    )
            continue
        texts: list[str] = []
        chunks: list[dict[str, Any]] = []
        tool_calls: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ReasoningPart) and thinking and part.text:
                block: dict[str, Any] = {"type": "thinking", "thinking": [{"type": "text", "text": part.text}]}
                signature = ((part.provider_metadata or {}).get("mistral") or {}).get("signature")
                if signature:
                    block["signature"] = signature
                chunks.append(block)
            elif isinstance(part, ToolCallPart):
                tool_calls.append(
                    {"id": wire_tool_call_id(part.tool_call_id), "type": "function",
                     "function": {"name": part.name, "arguments": json.dumps(part.arguments)}}
                )
            elif isinstance(part, AttachmentPart) and part.attachment is not None:
                chunks.append(attachment_chunk(part.attachment))
        text = "\n".join(texts)
        if chunks:
            content: Any = [chunk for chunk in chunks if chunk["type"] == "thinking"]
            if text:
                content.append({"type": "text", "text": text})
            content += [chunk for chunk in chunks if chunk["type"] != "thinking"]
        else:
            content = text
        wire: dict[str, Any] = {"role": role, "content": content}
        if tool_calls:
            wire["tool_calls"] = tool_calls
        messages.append(wire)
    return messages


def strict_schema(schema: Any) -> Any:
    """A copy of a JSON schema with ``additionalProperties: false`` on every object, as strict mode needs."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {  # "properties" and "$defs" map names to schemas: a property may be named "properties"
        key: {name: strict_schema(sub) for name, sub in value.items()}
        if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict)
        else strict_schema(value)
        for key, value in schema.items()
    }
    if result.get("type") == "object" or "properties" in result:
        result["additionalProperties"] = False
    return result


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` asking for JSON that matches ``schema``, strictly."""
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": strict_schema(schema), "strict": True}}


def tool_definitions(prompt: llm.Prompt) -> list[dict[str, Any]]:
    return [
        {"type": "function",
         "function": {"name": tool.name, "description": tool.description or "",
                      "parameters": tool.input_schema or {"type": "object", "properties": {}}}}
        for tool in prompt.tools
        if isinstance(tool, llm.Tool)
    ]


class ReplyDecoder:
    """Turns OpenAI-shaped reply chunks (streamed deltas, one whole message, or completion texts) into llm events.

    ``take`` is the per-chunk hot path: it returns the text of a plain text delta as a ``str`` (llm
    wraps it), a list of events for anything richer, or ``None``. ``finish`` checks that the reply
    really ended, emits the accumulated tool calls and records usage on the response.
    """

    __slots__ = ("endpoint", "finish_reason", "usage", "model", "reply_id", "tool_calls", "text_length")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.reply_id: str | None = None
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.text_length = 0

    def take(self, chunk: dict[str, Any]) -> Union[str, list[StreamEvent], None]:
        choices = chunk["choices"]
        if "usage" in chunk and chunk["usage"]:
            self.usage = chunk["usage"]
        if not choices:
            return None
        choice = choices[0]
        # chat chunks carry a delta or a message; completion chunks (llama.cpp's create_completion) a text
        delta = choice.get("delta") or choice.get("message") or {"content": choice.get("text")}
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
            self.model = chunk.get("model")
            self.reply_id = chunk.get("id")
        content = delta.get("content")
        if content.__class__ is str and (len(delta) == 1 or (len(delta) == 2 and "role" in delta)):
            if not content:
                return None
            self.text_length += len(content)
            return content
        return self._rich(delta, content)

    def events(self, chunks: Iterable[dict[str, Any]]) -> Iterator[Union[str, StreamEvent]]:
        """All events of a reply's chunks (call ``finish`` after)."""
        take = self.take
        for chunk in chunks:
            out = take(chunk)
            if out is None:
                continue
            if out.__class__ is str:
                yield out
            else:
                yield from out

    def _rich(self, delta: dict[str, Any], content: Any) -> list[StreamEvent] | None:
        events: list[StreamEvent] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")  # llama.cpp server, vLLM
        if isinstance(reasoning, str) and reasoning:
            events.append(StreamEvent(type="reasoning", chunk=reasoning))
        if isinstance(content, str) and content:
            self.text_length += len(content)
            events.append(StreamEvent(type="text", chunk=content))
        elif isinstance(content, list):
            for piece in content:
                kind = piece.get("type")
                if kind == "text" and piece.get("text"):
                    self.text_length += len(piece["text"])
                    events.append(StreamEvent(type="text", chunk=piece["text"]))
                elif kind == "thinking":
                    text = "".join(p.get("text", "") for p in piece.get("thinking") or () if isinstance(p, dict))
                    metadata = {"mistral": {"signature": piece["signature"]}} if piece.get("signature") else None
                    if text or metadata:
                        events.append(StreamEvent(type="reasoning", chunk=text, provider_metadata=metadata))
        for position, call in enumerate(delta.get("tool_calls") or ()):
            slot = self.tool_calls.setdefault(call.get("index", position), {"id": None, "name": "", "arguments": ""})
            slot["id"] = slot["id"] or call.get("id")
            function = call.get("function") or {}
            slot["name"] += function.get("name") or ""
            arguments = function.get("arguments")
            slot["arguments"] += arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        return events or None

    def finish(self, response: llm.Response | llm.AsyncResponse, requested_model: str | None = None) -> list[StreamEvent]:
        """Close the reply: an unfinished one is an error; returns the tool-call events."""
        if self.finish_reason is None:
            raise StreamCutError(
                f"The reply from {self.endpoint.label} ended before it was finished (no finish_reason: the "
                f"connection was cut after {self.text_length} characters). The text is incomplete; try again."
            )
        if self.finish_reason == "error":
            raise MistralSuiteError(f"{self.endpoint.label} stopped the reply with an error.")
        events = []
        for slot in self.tool_calls.values():
            try:
                arguments = json.loads(slot["arguments"] or "{}")
            except ValueError:
                raise MistralSuiteError(
                    f"The model called tool {slot['name']!r} with arguments that are not JSON: {slot['arguments'][:200]!r}"
                ) from None
            call_id = slot["id"] or wire_tool_call_id(f"{self.reply_id}-{slot['name']}-{len(events)}")
            events.append(StreamEvent(type="tool_call_name", chunk=slot["name"], tool_call_id=call_id, tool_name=slot["name"]))
            events.append(StreamEvent(type="tool_call_args", chunk=json.dumps(arguments), tool_call_id=call_id))
            response.add_tool_call(llm.ToolCall(name=slot["name"], arguments=arguments, tool_call_id=call_id))
        usage = self.usage or {}
        if usage:
            details = {
                key: value
                for key, value in {**usage, **(usage.get("prompt_tokens_details") or {})}.items()
                if key not in {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"}
                and value
                and isinstance(value, (int, float, str))
            }
            response.set_usage(input=usage.get("prompt_tokens"), output=usage.get("completion_tokens"),
                               details=details or None)
        if self.model and self.model != requested_model:
            response.set_resolved_model(self.model)
        response.response_json = {
            key: value
            for key, value in {"id": self.reply_id, "model": self.model, "finish_reason": self.finish_reason,
                               "usage": usage or None}.items()
            if value
        }
        return events


def run_reply(
    endpoint: Endpoint, path: str, key: str | None, body: dict[str, Any], stream: bool,
    response: llm.Response, requested_model: str,
) -> Iterator[Union[str, StreamEvent]]:
    """Send a chat-shaped request (streamed or not) and yield its events; the shared body of ``execute``."""
    decoder = ReplyDecoder(endpoint)
    if stream:
        chunks: Iterable[dict[str, Any]] = stream_chunks(endpoint, path, key, body)
    else:
        chunks = (request_json(endpoint, "POST", path, key, body),)
    yield from decoder.events(chunks)
    yield from decoder.finish(response, requested_model)


async def arun_reply(
    endpoint: Endpoint, path: str, key: str | None, body: dict[str, Any], stream: bool,
    response: llm.AsyncResponse, requested_model: str,
) -> AsyncIterator[Union[str, StreamEvent]]:
    """Async twin of ``run_reply``."""
    decoder = ReplyDecoder(endpoint)
    take = decoder.take
    if stream:
        async for chunk in astream_chunks(endpoint, path, key, body):
            out = take(chunk)
            if out is None:
                continue
            if out.__class__ is str:
                yield out
            else:
                for event in out:
                    yield event
    else:
        out = take(await arequest_json(endpoint, "POST", path, key, body))
        for event in [out] if out.__class__ is str else out or ():
            yield event
    for event in decoder.finish(response, requested_model):
        yield event


# ---------------------------------------------------------------------------------------------
# 5. Model classes
# ---------------------------------------------------------------------------------------------


def _json_list_or_str(value: Any) -> Any:
    """``-o stop '["a", "b"]'`` arrives as a string: accept a JSON list there."""
    if isinstance(value, str) and value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
            return parsed
    return value


class OptionsBase(llm.Options):
    """llm options whose validator is built on first use (building it at import would cost every
    `llm` command milliseconds), with the ``stop`` option every model here takes."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    stop: Optional[Union[str, list[str]]] = Field(None, description="Stop sequence, or a JSON list of them")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return _json_list_or_str(value)


class MistralOptions(OptionsBase):
    """Options of Mistral's chat API; each is sent only when set."""

    temperature: Optional[float] = Field(None, ge=0, le=1.5, description="Sampling temperature, 0 to 1.5")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling probability mass, (0, 1]")
    max_tokens: Optional[int] = Field(None, ge=1, description="Maximum number of tokens to generate")
    random_seed: Optional[int] = Field(None, ge=0, description="Seed for deterministic sampling")
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2, description="Penalty for tokens already present")
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2, description="Penalty by token frequency")
    safe_prompt: Optional[bool] = Field(None, description="Inject Mistral's safety system prompt")
    prefix: Optional[str] = Field(None, description="Start the answer with this text (assistant prefix)")
    prediction: Optional[str] = Field(None, description="Expected output, to speed up near-identical rewrites")
    reasoning_effort: Optional[Literal["none", "minimal", "low", "medium", "high", "xhigh"]] = Field(
        None, description="How much reasoning models think: none, minimal, low, medium, high or xhigh"
    )
    tool_choice: Optional[str] = Field(
        None, description="auto, none, any, required, or the name of one tool the model must call"
    )


PASS_THROUGH_OPTIONS = (
    "temperature", "top_p", "max_tokens", "stop", "random_seed", "presence_penalty", "frequency_penalty",
    "safe_prompt", "reasoning_effort",
)


def mistral_key(explicit: str | None) -> str:
    """The Mistral API key: ``--key``, then ``llm keys set mistral``, LLM_MISTRAL_KEY, MISTRAL_API_KEY."""
    key = llm.get_key(explicit_key=explicit, key_alias="mistral", env_var="LLM_MISTRAL_KEY")
    key = key or os.environ.get("MISTRAL_API_KEY")
    if not key:
        raise MissingKeyError(
            "No Mistral API key found. Set one with `llm keys set mistral`, or the LLM_MISTRAL_KEY "
            "(or MISTRAL_API_KEY) environment variable. Keys: https://console.mistral.ai/api-keys"
        )
    return key


class _MistralChatBase:
    """What the sync and async Mistral chat models share: identity, key lookup and the request body."""

    needs_key = "mistral"
    key_env_var = "LLM_MISTRAL_KEY"
    can_stream = True
    supports_schema = True
    Options = MistralOptions

    def __init__(self, entry: CatalogEntry) -> None:
        self.entry = entry
        self.model_id = entry.model_id
        self.supports_tools = "tools" in entry.capabilities
        self.attachment_types = (IMAGE_TYPES if "vision" in entry.capabilities else frozenset()) | (
            AUDIO_TYPES if "audio" in entry.capabilities else frozenset()
        )

    def get_key(self, explicit_key: str | None = None) -> str:
        # llm asks for the key before execute(): say "retired" before "no key" for a retired model.
        if self.entry.status == RETIRED:
            raise MistralSuiteError(retired_message(self.entry))
        return mistral_key(explicit_key)

    def request_body(self, prompt: llm.Prompt, stream: bool) -> dict[str, Any]:
        entry, options = self.entry, prompt.options
        if options.reasoning_effort is not None and "reasoning" not in entry.capabilities:
            raise MistralSuiteError(
                f"reasoning_effort works only with reasoning models (such as magistral-medium); "
                f"{entry.api_name} is not one."
            )
        messages = chat_messages(prompt, thinking=True)
        if options.prefix is not None:
            messages.append({"role": "assistant", "content": options.prefix, "prefix": True})
        body: dict[str, Any] = {"model": entry.api_name, "messages": messages}
        if stream:
            body["stream"] = True
        for name in PASS_THROUGH_OPTIONS:
            value = getattr(options, name)
            if value is not None:
                body[name] = value
        if options.prediction is not None:
            body["prediction"] = {"type": "content", "content": options.prediction}
        tools = tool_definitions(prompt)
        if tools:
            body["tools"] = tools
        if options.tool_choice is not None:
            body["tool_choice"] = tool_choice(options.tool_choice, tools)
        if prompt.schema:
            body["response_format"] = json_schema_format(prompt.schema)
        return body


def tool_choice(choice: str, tools: list[dict[str, Any]]) -> Any:
    if choice in ("auto", "none", "any", "required"):
        return choice
    names = [tool["function"]["name"] for tool in tools]
    if choice not in names:
        listed = ", ".join(names) or "none were given"
        raise MistralSuiteError(f"tool_choice {choice!r} is not auto, none, any, required or a tool's name ({listed}).")
    return {"type": "function", "function": {"name": choice}}


class MistralChat(_MistralChatBase, llm.KeyModel):
    """A chat model of Mistral's API."""

    def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        body = self.request_body(prompt, stream)
        try:
            yield from run_reply(mistral_endpoint(), "/chat/completions", key, body, stream, response, self.entry.api_name)
        except MistralSuiteError as error:
            raise model_gone(self.entry, error) from None


class AsyncMistralChat(_MistralChatBase, llm.AsyncKeyModel):
    """Async twin of ``MistralChat``."""

    async def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        body = self.request_body(prompt, stream)
        endpoint = mistral_endpoint()
        try:
            async for event in arun_reply(endpoint, "/chat/completions", key, body, stream, response, self.entry.api_name):
                yield event
        except MistralSuiteError as error:
            raise model_gone(self.entry, error) from None


def model_gone(entry: CatalogEntry, error: MistralSuiteError) -> MistralSuiteError:
    """A 404 for a model the catalog knows a successor or a local route for: name them."""
    if error.status != 404 or not (entry.replacement or entry.local_route):
        return error
    return MistralSuiteError(
        f"Mistral's API no longer serves {entry.api_name} (404{': ' + error.detail if error.detail else ''}). "
        f"{alternatives(entry)} `llm mistral refresh` updates the model list.",
        status=404, detail=error.detail,
    )


# ---------------------------------------------------------------------------------------------
# 5b. Embeddings
# ---------------------------------------------------------------------------------------------

MAX_INPUTS_PER_REQUEST = 512
MAX_TOKENS_PER_REQUEST = 16384
MAX_TOKENS_PER_INPUT = 8192
CODESTRAL_EMBED_DIMENSIONS = (256, 512, 1024, 1536, 3072)


_WORDISH = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """A deliberately high token count without a tokenizer: Mistral's tokenizers average about four
    UTF-8 bytes a token on English prose and fewer on code and other scripts; we assume three, and at
    least one token per word and per punctuation mark (numbers, CSV and code are dense in those).
    A low estimate costs one split request (see ``EmbeddingJob.embed``), never a failure."""
    return max(len(text.encode("utf-8")) // 3, len(_WORDISH.findall(text))) + 1


def pack_batches(texts: list[str], max_inputs: int, max_tokens: int) -> list[range]:
    """Consecutive index ranges, each within the per-request input and (estimated) token limits."""
    batches: list[range] = []
    start, tokens = 0, 0
    for index, text in enumerate(texts):
        cost = estimate_tokens(text)
        if index > start and (index - start >= max_inputs or tokens + cost > max_tokens):
            batches.append(range(start, index))
            start, tokens = index, 0
        tokens += cost
    if start < len(texts):
        batches.append(range(start, len(texts)))
    return batches


def _item_labels(count: int) -> tuple[list[str], str]:
    """How to name each of the ``count`` items llm handed to ``embed_batch`` in an error, and what a
    failure leaves unstored.

    llm passes no ids to embedding models, so they are read from its calling frames (call this on the
    caller's thread, not from a worker): ``Collection.embed_multi_with_metadata`` (``llm embed-multi``)
    holds the batch's ``(id, content, metadata)`` rows in ``filtered_batch``; ``Collection.embed``
    (``llm embed COLLECTION ID``) has the ``id``. Elsewhere items are numbered."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_name
        local = frame.f_locals if name in ("embed_multi_with_metadata", "embed") else {}
        if type(local.get("self")).__name__ == "Collection":
            rows = local.get("filtered_batch")
            if name == "embed_multi_with_metadata" and isinstance(rows, list) and len(rows) == count:
                return [f"Item {row[0]!r}" for row in rows], (
                    f"Nothing from this batch of {count} item{'s' * (count != 1)} was stored "
                    "(earlier batches of `llm embed-multi`, if any, were)."
                )
            if name == "embed" and count == 1 and "id" in local:
                return [f"Item {local['id']!r}"], "Nothing was stored."
        frame = frame.f_back
    if count == 1:
        return ["The input"], ""
    return [f"Item {index + 1} of {count}" for index in range(count)], f"None of the {count} items was embedded."


def _sentence(text: str) -> str:
    return text.rstrip().rstrip(".") + "."


def _too_many(error: MistralSuiteError) -> bool:
    return error.status == 400 and "too many" in error.detail.lower()


class EmbeddingJob:
    """One ``embed_batch`` call: packs requests, runs them on a few threads, splits what the service
    finds too big, and returns the vectors in input order."""

    def __init__(
        self, model: "MistralEmbedding", texts: list[str], key: str | None,
        labels: list[str] | None = None, unstored: str = "",
    ) -> None:
        self.model, self.texts, self.key = model, texts, key
        self.labels = labels or _item_labels(len(texts))[0]  # computed on the caller's thread
        self.unstored = unstored  # what a failure tells about rows not stored
        self.pace = Pace(model.concurrency())

    def run(self) -> list[list[float]]:
        from concurrent.futures import ThreadPoolExecutor

        batches = pack_batches(self.texts, self.model.max_inputs, self.model.max_tokens)
        if len(batches) == 1:
            return self.embed(batches[0])
        with ThreadPoolExecutor(max_workers=min(len(batches), self.pace.ceiling)) as pool:
            futures = [pool.submit(self.embed, batch) for batch in batches]
            try:
                return [vector for future in futures for vector in future.result()]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def embed(self, batch: range) -> list[list[float]]:
        body = self.model.request_body([self.texts[i] for i in batch], self.key)
        try:
            answer = request_json(self.model.endpoint(), "POST", "/embeddings", self.key, body, self.pace)
        except MistralSuiteError as error:
            if _too_many(error) and len(batch) > 1:  # our estimate was low: halve and carry on
                middle = len(batch) // 2
                return self.embed(batch[:middle]) + self.embed(batch[middle:])
            raise self.failure(error, batch) from None
        return self.vectors(answer, batch)

    def failure(self, error: MistralSuiteError, batch: range) -> MistralSuiteError:
        match = re.search(r"input (?:id )?(\d+)", error.detail, re.IGNORECASE)
        if error.status == 400 and (len(batch) == 1 or (match and int(match.group(1)) < len(batch))):
            index = batch[0] if len(batch) == 1 else batch[int(match.group(1))]
            what = f"{self.labels[index]} could not be embedded: {error.detail or error.message}"
        else:
            what = error.message
        message = _sentence(what) + (f" {self.unstored}" if self.unstored else "")
        return MistralSuiteError(message, status=error.status, detail=error.detail)

    def vectors(self, answer: Any, batch: range) -> list[list[float]]:
        endpoint = self.model.endpoint()
        try:
            rows = sorted(enumerate(answer["data"]), key=lambda pair: pair[1].get("index", pair[0]))
            vectors = [row["embedding"] for _, row in rows]
        except (KeyError, TypeError, AttributeError):
            raise MistralSuiteError(f"{endpoint.label} answered /embeddings without embeddings.") from None
        unstored = f" {self.unstored}" if self.unstored else ""
        if len(vectors) != len(batch):
            raise MistralSuiteError(
                f"{endpoint.label} returned {len(vectors)} embeddings for {len(batch)} inputs.{unstored}"
            )
        expected = self.model.dimensions or len(vectors[0])
        for vector in vectors:
            if not isinstance(vector, list) or len(vector) != expected:
                size = len(vector) if isinstance(vector, list) else type(vector).__name__
                raise MistralSuiteError(
                    f"{endpoint.label} returned a {size}-dimension vector for {self.model.model_id}, "
                    f"which has {expected} dimensions; it was not used.{unstored}"
                )
        return vectors


class MistralEmbedding(llm.EmbeddingModel):
    """An embedding model of Mistral's API; ``output_dimension`` is part of the model id."""

    needs_key = "mistral"
    key_env_var = "LLM_MISTRAL_KEY"
    batch_size = 16384  # llm hands over big batches; requests are packed by tokens here
    max_inputs = MAX_INPUTS_PER_REQUEST
    max_tokens = MAX_TOKENS_PER_REQUEST

    def __init__(self, model_id: str, api_name: str, dimensions: int | None, output_dimension: int | None = None):
        self.model_id = model_id
        self.api_name = api_name
        self.dimensions = dimensions
        self.output_dimension = output_dimension

    def get_key(self, explicit_key: str | None = None) -> str:
        return mistral_key(explicit_key)

    def endpoint(self) -> Endpoint:
        return mistral_endpoint()

    @staticmethod
    def concurrency() -> int:
        return max(1, int(_env_float("LLM_MISTRAL_EMBED_CONCURRENCY", 4)))

    def request_body(self, texts: list[str], key: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.api_name, "input": texts}
        if self.output_dimension:
            body["output_dimension"] = self.output_dimension
        return body

    def embed_batch(self, items: Iterable[str | bytes], *, key: str | None = None) -> Iterator[list[float]]:
        texts = list(items)
        if not texts:
            return
        labels, unstored = _item_labels(len(texts))  # here, on llm's thread: the ids are in its frames
        unstored = f" {unstored}" if unstored else ""
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise MistralSuiteError(f"{labels[index]} is not text; this model embeds text only.{unstored}")
            if not text.strip():
                raise MistralSuiteError(
                    f"{labels[index]} is empty (or only whitespace), which cannot be embedded.{unstored}"
                )
            if len(text.encode("utf-8")) // 6 > MAX_TOKENS_PER_INPUT:  # too long even by a low estimate
                raise MistralSuiteError(
                    f"{labels[index]} is too long to embed (about {estimate_tokens(text)} tokens; "
                    f"the limit is {MAX_TOKENS_PER_INPUT} per input). Split it into smaller pieces.{unstored}"
                )
        key = key or self.get_key()
        yield from EmbeddingJob(self, texts, key, labels, unstored.strip()).run()


def embedding_models() -> list[tuple[MistralEmbedding, tuple[str, ...]]]:
    """The API's embedding models with their aliases: one model id per codestral-embed dimension."""
    models: list[tuple[MistralEmbedding, tuple[str, ...]]] = []
    for entry in load_catalog():
        if "embedding" not in entry.capabilities:
            continue
        if entry.api_name == "codestral-embed":
            for size in CODESTRAL_EMBED_DIMENSIONS:
                aliases = ("codestral-embed",) if size == 1536 else ()
                models.append((MistralEmbedding(f"mistral/codestral-embed-{size}", entry.api_name, size, size), aliases))
        else:
            dimensions = 1024 if entry.api_name.startswith("mistral-embed") else None
            models.append((MistralEmbedding(entry.model_id, entry.api_name, dimensions), entry.aliases))
    return models


# ---------------------------------------------------------------------------------------------
# 5c. Codestral fill-in-the-middle
# ---------------------------------------------------------------------------------------------


class FIMOptions(OptionsBase):
    """Options of ``POST /v1/fim/completions``; each is sent only when set."""

    suffix: Optional[str] = Field(None, description="The code after the gap")
    model: Optional[str] = Field(None, description="A FIM-capable model: codestral-latest (default) or a dated version")
    max_tokens: Optional[int] = Field(None, ge=1, description="Maximum number of tokens to generate")
    min_tokens: Optional[int] = Field(None, ge=0, description="Minimum number of tokens to generate")
    temperature: Optional[float] = Field(None, ge=0, le=1.5, description="Sampling temperature, 0 to 1.5")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling probability mass, (0, 1]")
    random_seed: Optional[int] = Field(None, ge=0, description="Seed for deterministic sampling")


FIM_DEFAULT_MODEL = "codestral-latest"


class _FIMBase:
    """Fill-in-the-middle: the prompt is the code before the gap, ``-o suffix`` the code after."""

    model_id = "mistral/codestral-fim"
    needs_key = "mistral"
    key_env_var = "LLM_MISTRAL_KEY"
    can_stream = True
    supports_conversation = False
    Options = FIMOptions

    def get_key(self, explicit_key: str | None = None) -> str:
        return mistral_key(explicit_key)

    def request_body(self, prompt: llm.Prompt, stream: bool) -> dict[str, Any]:
        options = prompt.options
        name = (options.model or FIM_DEFAULT_MODEL).removeprefix("mistral/")  # -m mistral/codestral-2508
        entry = find_entry(name)
        if entry is not None and "fim" not in entry.capabilities:
            fim_models = ", ".join(e.api_name for e in load_catalog() if "fim" in e.capabilities)
            raise MistralSuiteError(f"{entry.api_name} cannot fill in the middle; FIM models: {fim_models}.")
        if prompt.system:
            raise MistralSuiteError("Fill-in-the-middle takes no system prompt: pass the code before the gap only.")
        body: dict[str, Any] = {"model": entry.api_name if entry else name, "prompt": prompt.prompt}
        if stream:
            body["stream"] = True
        for option in ("suffix", "max_tokens", "min_tokens", "temperature", "top_p", "stop", "random_seed"):
            value = getattr(options, option)
            if value is not None:
                body[option] = value
        return body


class CodestralFIM(_FIMBase, llm.KeyModel):
    def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        endpoint = mistral_endpoint()
        body = self.request_body(prompt, stream)
        yield from run_reply(endpoint, "/fim/completions", key, body, stream, response, body["model"])


class AsyncCodestralFIM(_FIMBase, llm.AsyncKeyModel):
    async def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        endpoint = mistral_endpoint()
        body = self.request_body(prompt, stream)
        async for event in arun_reply(endpoint, "/fim/completions", key, body, stream, response, body["model"]):
            yield event


# ---------------------------------------------------------------------------------------------
# 5d. llamafile and other OpenAI-compatible servers
# ---------------------------------------------------------------------------------------------

LLAMAFILE_START = "./mixtral-8x7b-instruct-v0.1.Q5_K_M.llamafile --server --nobrowser"


class ServerConfig(NamedTuple):
    """An OpenAI-compatible server registered as an llm model (llamafile is built in)."""

    name: str
    url: str
    model: str | None = None  # the wire model name; discovered from GET /models when None
    key_name: str | None = None  # the `llm keys` name of its key; no key is ever sent without one
    aliases: tuple[str, ...] = ()
    embedding: bool = False

    def endpoint(self) -> Endpoint:
        # The label names the server; connection errors add "is not reachable at <url>" themselves.
        if self.name == LLAMAFILE.name:
            label = "the llamafile"
            start = f"Start one with `{LLAMAFILE_START}`, or set LLM_LLAMAFILE_BASE_URL to where it listens."
            add_name = "NAME"  # the built-in entry takes no key: register the server under a name of its own
        else:
            label = f"the server {self.name!r}"
            start = f"Start it, or change its URL with `llm mistral servers add {self.name} URL`."
            add_name = self.name
        return Endpoint(
            base_url=self.url.rstrip("/"),
            label=label,
            key_hint=f"Set its key with `llm keys set {self.key_name}`." if self.key_name else
            f"It needs a key: `llm mistral servers add {add_name} {self.url} --key-name KEY` and "
            "`llm keys set KEY` (or pass --key).",
            start_hint=start,
            retry_refused=False,
        )

    def key(self, explicit: str | None) -> str | None:
        """The key for this server only: ``--key`` (a key or an `llm keys` name), else its own `llm keys`
        entry; never an environment variable or another service's key."""
        if not self.key_name:
            return llm.get_key(explicit_key=explicit) if explicit else None
        key = llm.get_key(explicit_key=explicit, key_alias=self.key_name)
        if not key:
            raise MissingKeyError(f"No key found for {self.name}: set one with `llm keys set {self.key_name}`.")
        return key


LLAMAFILE = ServerConfig(name="llamafile-server", url="http://127.0.0.1:8080/v1", aliases=("llamafile",))


def servers_path() -> Path:
    return llm.user_dir() / "mistral-suite-servers.json"


def load_servers() -> list[ServerConfig]:
    """The built-in llamafile plus the servers added with ``llm mistral servers add``; never raises."""
    llamafile = LLAMAFILE._replace(url=os.environ.get("LLM_LLAMAFILE_BASE_URL") or LLAMAFILE.url)
    added = []
    for name, config in _read_json_object(servers_path()).items():
        try:  # one entry we cannot read is skipped, never fatal
            added.append(ServerConfig(name=name, **{**config, "aliases": tuple(config.get("aliases", ()))}))
        except (TypeError, AttributeError, ValueError):
            continue
    return [llamafile] + [server for server in added if server.name != llamafile.name]


_discovered_models: dict[str, str] = {}


def wire_model(server: ServerConfig, key: str | None) -> str:
    """The model name to send: configured, or the first one the server lists (once per process)."""
    if server.model:
        return server.model
    if server.url not in _discovered_models:
        try:
            listing = request_json(server.endpoint(), "GET", "/models", key)
        except MistralSuiteError as error:
            if error.status not in (404, 405):
                raise
            listing = None  # a server without /models: ask for --model below
        try:
            _discovered_models[server.url] = listing["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            name = "NAME" if server.name == LLAMAFILE.name else server.name
            raise MistralSuiteError(
                f"{server.endpoint().label} lists no model at {server.url}/models; name one with "
                f"`llm mistral servers add {name} {server.url} --model MODEL`."
            ) from None
    return _discovered_models[server.url]


class ServerOptions(OptionsBase):
    """Sampling options every OpenAI-compatible server takes; each is sent only when set."""

    temperature: Optional[float] = Field(None, ge=0, le=2, description="Sampling temperature, 0 to 2")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling probability mass, (0, 1]")
    max_tokens: Optional[int] = Field(None, ge=1, description="Maximum number of tokens to generate")
    seed: Optional[int] = Field(None, description="Seed for deterministic sampling")


class _ServerChatBase:
    """What the sync and async server chat models share."""

    can_stream = True
    supports_schema = True
    supports_tools = True
    key_env_var = None
    Options = ServerOptions

    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        self.model_id = server.name
        self.needs_key = server.key_name

    def get_key(self, explicit_key: str | None = None) -> str | None:
        return self.server.key(explicit_key)

    def request_body(self, prompt: llm.Prompt, stream: bool, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": chat_messages(prompt, thinking=False)}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        for name in ("temperature", "top_p", "max_tokens", "stop", "seed"):
            value = getattr(prompt.options, name)
            if value is not None:
                body[name] = value
        tools = tool_definitions(prompt)
        if tools:
            body["tools"] = tools
        if prompt.schema:
            body["response_format"] = json_schema_format(prompt.schema)
        return body


class ServerChat(_ServerChatBase, llm.KeyModel):
    """Chat with a model served by llamafile, llama.cpp's server, Ollama, vLLM or similar."""

    def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        model = wire_model(self.server, key)
        body = self.request_body(prompt, stream, model)
        try:
            yield from run_reply(self.server.endpoint(), "/chat/completions", key, body, stream, response, model)
        except MistralSuiteError as error:
            raise server_not_found(self.server, error) from None


class AsyncServerChat(_ServerChatBase, llm.AsyncKeyModel):
    async def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        model = wire_model(self.server, key)  # cached after the first call of the process
        body = self.request_body(prompt, stream, model)
        endpoint = self.server.endpoint()
        try:
            async for event in arun_reply(endpoint, "/chat/completions", key, body, stream, response, model):
                yield event
        except MistralSuiteError as error:
            raise server_not_found(self.server, error) from None


def server_not_found(server: ServerConfig, error: MistralSuiteError) -> MistralSuiteError:
    """A 404 from a server means a wrong URL or model name (not a retired Mistral model): say so."""
    if error.status != 404:
        return error
    detail = f": {error.detail}" if error.detail else ""
    return MistralSuiteError(
        f"{server.endpoint().label} answered 404 Not Found for {server.url}/chat/completions{detail}. "
        "Check its URL (usually ending in /v1) and model name: `llm mistral servers list`.",
        status=404, detail=error.detail,
    )


class ServerEmbedding(MistralEmbedding):
    """The ``/embeddings`` endpoint of an OpenAI-compatible server."""

    max_inputs = 64
    max_tokens = 65536

    def __init__(self, server: ServerConfig) -> None:
        super().__init__(server.name, server.model or "", None)
        self.server = server
        self.needs_key = server.key_name
        self.key_env_var = None

    def get_key(self, explicit_key: str | None = None) -> str | None:  # type: ignore[override]
        return self.server.key(explicit_key)

    def endpoint(self) -> Endpoint:
        return self.server.endpoint()

    def request_body(self, texts: list[str], key: str | None) -> dict[str, Any]:
        return {"model": wire_model(self.server, key), "input": texts}


# ---------------------------------------------------------------------------------------------
# 5e. Local GGUF models (llama.cpp)
# ---------------------------------------------------------------------------------------------

# Local models are GGUF files run in-process by llama-cpp-python (the `[local]` extra). Nothing here
# imports llama_cpp until a local model actually runs: registration reads two small JSON files only.
#
# - Registry: ``mistral-suite-local.json`` in llm's user dir (name -> path, aliases, embedding flag),
#   plus llm-llama-cpp's ``llama-cpp/models.json`` whose files appear as ``mistral-local/<name>``
#   (without its aliases, which stay llm-llama-cpp's).
# - One loaded ``Llama`` per file and process (``_LOCAL_LOADED``): the turns of ``llm chat`` reuse
#   the KV cache prefix instead of re-reading the conversation.
# - Chat goes through ``create_chat_completion`` with the GGUF's own template rendered by
#   llama-cpp-python's Jinja2ChatFormatter (never its built-in "mistral-instruct" format, which
#   drops system prompts); the system prompt is placed the way Mistral's tokenizers do. The chunks
#   are OpenAI-shaped, so ``ReplyDecoder`` (section 4) turns them into llm events.

LOCAL_PREFIX = "mistral-local/"
LOCAL_REGISTRY_FILE = "mistral-suite-local.json"
LOCAL_DEFAULT_MAX_TOKENS = 512
LOCAL_MAX_DEFAULT_CTX = 8192  # default n_ctx: the model's own context, capped (KV cache memory)
LOCAL_EMBED_MAX_CTX = 2048
LOCAL_INSTALL_HINT = "llm install 'llm-mistral-suite[local]' (or: pip install 'llm-mistral-suite[local]')"
HF_BASE_URL_ENV = "LLM_MISTRAL_HF_BASE_URL"

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


# --- GGUF header: a small reader (no numpy, no gguf package) ---------------------------------------

# GGML tensor type -> (elements per block, bytes per block), as in gguf.constants.GGML_QUANT_SIZES.
_GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class GGUFError(ValueError):
    """A file that llama.cpp cannot read as GGUF; the message says why, for the user."""


class GGUFInfo:
    """What ``local list`` shows and the loader checks, read from a GGUF header."""

    __slots__ = ("path", "version", "metadata", "tensor_count", "data_offset", "data_end", "file_size")

    def __init__(self, path: Path, version: int, metadata: dict[str, Any], tensor_count: int,
                 data_offset: int, data_end: int, file_size: int) -> None:
        self.path, self.version, self.metadata, self.tensor_count = path, version, metadata, tensor_count
        self.data_offset, self.data_end, self.file_size = data_offset, data_end, file_size

    def _arch(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture") or "?")

    @property
    def context_length(self) -> int | None:
        value = self._arch("context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def expert_count(self) -> int | None:
        value = self._arch("expert_count")
        return int(value) if isinstance(value, int) and value > 0 else None

    @property
    def expert_used_count(self) -> int | None:
        value = self._arch("expert_used_count")
        return int(value) if isinstance(value, int) else None

    @property
    def embedding_length(self) -> int | None:
        value = self._arch("embedding_length")
        return int(value) if isinstance(value, int) else None


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a GGUF file's header (key/values and tensor table) and check the file holds its tensors.

    Reads only the header pages (through mmap), so it is quick even for a 26 GB file. Large arrays
    (the vocabulary) are skipped; arrays of up to 16 items are kept. Raises ``GGUFError``.
    """
    import mmap
    import struct

    path = Path(path).expanduser()
    if not path.exists():
        raise GGUFError(f"No such file: {path}")
    if path.is_dir():
        raise GGUFError(f"{path} is a directory, not a GGUF file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        magic = handle.read(4)
        if magic != b"GGUF":
            raise GGUFError(
                f"{path} is not a GGUF file (llama.cpp reads only GGUF; "
                f"this file starts with {magic!r}). Download or convert the model to .gguf."
            )
        if size < 24:
            raise GGUFError(f"{path} is a corrupt GGUF file: it ends inside the header ({size} bytes)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos = 4

            def take(fmt: str) -> Any:
                nonlocal pos
                width = struct.calcsize(fmt)
                if pos + width > size:
                    raise GGUFError(f"{path} is a corrupt GGUF file: it ends inside the header (at byte {pos})")
                value = struct.unpack_from(fmt, buf, pos)[0]
                pos += width
                return value

            def string() -> str:
                nonlocal pos
                length = take("<Q")
                if pos + length > size:
                    raise GGUFError(f"{path} is a corrupt GGUF file: a string runs past the end (at byte {pos})")
                text = bytes(buf[pos:pos + length]).decode("utf-8", "replace")
                pos += length
                return text

            def skip_string() -> None:
                nonlocal pos
                length = take("<Q")
                pos += length

            def value(kind: int) -> Any:
                nonlocal pos
                if kind in _GGUF_SCALARS:
                    return take(_GGUF_SCALARS[kind])
                if kind == 8:
                    return string()
                if kind == 9:
                    item_kind, count = take("<I"), take("<Q")
                    if count <= 16:
                        return [value(item_kind) for _ in range(count)]
                    if item_kind in _GGUF_SCALAR_SIZES:
                        pos += count * _GGUF_SCALAR_SIZES[item_kind]
                    elif item_kind == 8:
                        for _ in range(count):
                            skip_string()
                    else:
                        for _ in range(count):
                            value(item_kind)
                    if pos > size:
                        raise GGUFError(f"{path} is a corrupt GGUF file: an array runs past the end")
                    return {"array_length": count}
                raise GGUFError(f"{path} is a corrupt GGUF file: unknown value type {kind} at byte {pos}")

            version = take("<I")
            if version not in (2, 3):
                raise GGUFError(f"{path} is GGUF version {version}; llama.cpp reads versions 2 and 3")
            tensor_count, kv_count = take("<Q"), take("<Q")
            if kv_count > 1_000_000 or tensor_count > 10_000_000:
                raise GGUFError(f"{path} is a corrupt GGUF file: implausible header counts")
            metadata: dict[str, Any] = {}
            for _ in range(kv_count):
                key = string()
                metadata[key] = value(take("<I"))
            data_end = 0
            for _ in range(tensor_count):
                name = string()
                n_dims = take("<I")
                if n_dims > 8:
                    raise GGUFError(f"{path} is a corrupt GGUF file: tensor {name!r} has {n_dims} dimensions")
                elements = 1
                for _ in range(n_dims):
                    elements *= take("<Q")
                kind, offset = take("<I"), take("<Q")
                block = _GGML_BLOCKS.get(kind)
                nbytes = elements // block[0] * block[1] if block else 0
                data_end = max(data_end, offset + nbytes)
            alignment = metadata.get("general.alignment")
            alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
            data_offset = -(-pos // alignment) * alignment
    info = GGUFInfo(path, version, metadata, tensor_count, data_offset, data_offset + data_end, size)
    if tensor_count and size < info.data_end:
        raise GGUFError(
            f"{path} is a truncated GGUF file: its tensors need {info.data_end:,} bytes but the file has "
            f"{size:,} (an interrupted download?)"
        )
    return info


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


# --- registry --------------------------------------------------------------------------------------


class LocalModelInfo:
    """One registered GGUF file."""

    __slots__ = ("name", "path", "aliases", "embedding", "source")

    def __init__(self, name: str, path: str, aliases: Iterable[str] = (), embedding: bool = False,
                 source: str = "suite") -> None:
        self.name, self.path, self.aliases = name, path, tuple(aliases)
        self.embedding, self.source = embedding, source

    @property
    def model_id(self) -> str:
        return LOCAL_PREFIX + self.name


def local_registry_path() -> Path:
    return llm.user_dir() / LOCAL_REGISTRY_FILE


def llama_cpp_models_path() -> Path:
    """llm-llama-cpp's registry (``llm llama-cpp add-model`` / ``download-model`` write it)."""
    return llm.user_dir() / "llama-cpp" / "models.json"


def read_local_registry() -> dict[str, dict[str, Any]]:
    """The suite's registered GGUF files: name -> {"path", "aliases", "embedding", ...}; never raises."""
    models = _read_json_object(local_registry_path()).get("models")
    if not isinstance(models, dict):
        return {}
    return {name: entry for name, entry in models.items() if isinstance(entry, dict) and entry.get("path")}


def write_local_registry(models: dict[str, dict[str, Any]]) -> None:
    _write_json(local_registry_path(), {"models": models})


def local_models() -> list[LocalModelInfo]:
    """The suite's models, then llm-llama-cpp's GGUF files that the suite does not register itself."""
    suite = read_local_registry()
    result = [
        LocalModelInfo(name, str(entry["path"]),
                       [a for a in entry.get("aliases") or () if isinstance(a, str)],
                       bool(entry.get("embedding")))
        for name, entry in suite.items()
    ]
    for name, entry in _read_json_object(llama_cpp_models_path()).items():
        if name in suite or not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue
        if not entry["path"].lower().endswith(".gguf"):
            continue  # llm-llama-cpp also lists GGML-era files llama.cpp no longer reads
        result.append(LocalModelInfo(name, entry["path"], (), False, "llm-llama-cpp"))
    return result


def register_local_models(register: Any) -> None:
    """Chat models for the registered GGUF files; cheap (two small JSON files) and never raises."""
    try:
        models = local_models()
    except Exception:
        return
    for info in models:
        if info.embedding:
            continue
        try:
            register(LocalChat(info), AsyncLocalChat(info), aliases=info.aliases)
        except Exception:
            continue


def register_local_embedding_models(register: Any) -> None:
    """Embedding models for GGUF files added with ``--embedding``; never raises."""
    try:
        models = local_models()
    except Exception:
        return
    for info in models:
        if info.embedding:
            try:
                register(LocalEmbedding(info), aliases=info.aliases)
            except Exception:
                continue


# --- llama.cpp: import, logging, one loaded model per file -----------------------------------------

_local_log_state: dict[str, Any] = {"verbose": False, "errors": []}
_local_log_callback: Any = None  # the ctypes callback must stay referenced while llama.cpp may call it
_LOCAL_LOADED: dict[tuple[str, bool], "LoadedLlama"] = {}


def import_llama_cpp() -> Any:
    """``llama_cpp``, with llama.cpp's logging routed through ``_local_log``; a clear error if missing."""
    global _local_log_callback
    try:
        import llama_cpp
    except ImportError:
        raise MistralSuiteError(
            f"Local models need llama-cpp-python, which is not installed. Install it with: {LOCAL_INSTALL_HINT}"
        ) from None
    except Exception as exc:  # the package is there but its compiled library does not load
        raise MistralSuiteError(
            f"llama-cpp-python is installed but does not load ({exc}). Reinstall it with: {LOCAL_INSTALL_HINT}"
        ) from None
    if _local_log_callback is None:
        import ctypes

        _local_log_callback = llama_cpp.llama_log_callback(_local_log)
        llama_cpp.llama_log_set(_local_log_callback, ctypes.c_void_p(0))
    return llama_cpp


def _local_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's log callback: silent unless ``-o verbose 1``; keeps the last error lines for messages."""
    try:
        message = text.decode("utf-8", "replace")
        if _local_log_state["verbose"]:
            sys.stderr.write(message)
            sys.stderr.flush()
        if level == 4:  # GGML_LOG_LEVEL_ERROR (ggml's enum: NONE, DEBUG, INFO, WARN, ERROR, CONT)
            errors = _local_log_state["errors"]
            if len(errors) < 8:
                errors.append(message.strip())
    except Exception:  # an exception must never escape into C
        pass


def _last_llama_error() -> str:
    """The most telling error line llama.cpp logged since the last ``_local_log_state["errors"]`` reset."""
    errors = [line for line in _local_log_state["errors"] if line]
    telling = [line for line in errors if "error" in line.lower()]
    return (telling or errors or [""])[0]


class LoadedLlama:
    """A ``Llama`` kept loaded for the process, with what is needed to chat with it."""

    __slots__ = ("llama", "settings", "n_threads", "lock", "formatter", "meter")

    def __init__(self, llama: Any, settings: tuple, n_threads: int | None) -> None:
        import threading

        self.llama, self.settings, self.n_threads = llama, settings, n_threads
        self.lock = threading.Lock()
        self.formatter: Optional[LocalChatFormatter] = None
        self.meter: Optional[_LocalMeter] = None


def default_gpu_layers(llama_cpp: Any) -> int:
    """All layers on the GPU when this llama-cpp-python build can offload, else none."""
    try:
        return -1 if llama_cpp.llama_supports_gpu_offload() else 0
    except Exception:
        return 0


def check_gguf(path: str) -> GGUFInfo:
    try:
        return read_gguf_info(path)
    except GGUFError as exc:
        raise MistralSuiteError(str(exc)) from None
    except OSError as exc:
        raise MistralSuiteError(f"Cannot read {path}: {exc.strerror or exc}") from None


def load_local_llama(path: str, *, embedding: bool = False, n_ctx: int | None = None,
                     n_gpu_layers: int | None = None, n_threads: int | None = None,
                     verbose: bool = False) -> LoadedLlama:
    """The process's ``Llama`` for ``path``, loaded on first use and kept (a KV cache to reuse)."""
    llama_cpp = import_llama_cpp()
    _local_log_state["verbose"] = bool(verbose)
    key = (str(path), embedding)
    gpu = default_gpu_layers(llama_cpp) if n_gpu_layers is None else n_gpu_layers
    loaded = _LOCAL_LOADED.get(key)
    if loaded is not None and loaded.settings[:2] == (n_ctx, gpu) and Path(path).exists():
        if n_threads and n_threads != loaded.n_threads:
            llama_cpp.llama_set_n_threads(loaded.llama.ctx, n_threads, n_threads)
            loaded.n_threads = n_threads
        loaded.llama.verbose = bool(verbose)  # llama-cpp-python's own prints follow this flag
        return loaded
    if loaded is not None:  # other settings: one model per file, so the old one goes first
        del _LOCAL_LOADED[key]
        try:
            loaded.llama.close()
        except Exception:
            pass
    info = check_gguf(path)
    trained = info.context_length or 4096
    ctx = n_ctx or min(trained, LOCAL_EMBED_MAX_CTX if embedding else LOCAL_MAX_DEFAULT_CTX)
    # llama.cpp pads the context to a multiple of 256 but llama-cpp-python sizes its token buffer
    # by the number asked for: ask for the padded size, or prompts in between overflow that buffer.
    ctx = -(-ctx // 256) * 256
    kwargs: dict[str, Any] = {"model_path": str(path), "n_ctx": ctx, "n_gpu_layers": gpu, "verbose": bool(verbose)}
    if n_threads:
        kwargs["n_threads"] = kwargs["n_threads_batch"] = n_threads
    if embedding:
        kwargs.update(embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_batch=ctx, n_ubatch=ctx)
    _local_log_state["errors"].clear()
    try:
        llama = llama_cpp.Llama(**kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        detail = _last_llama_error() or str(exc)
        if "context" in str(exc):
            raise MistralSuiteError(
                f"llama.cpp could not create a context of {ctx} tokens for {path} ({detail}). "
                "Try a smaller -o n_ctx."
            ) from None
        raise MistralSuiteError(
            f"llama.cpp could not load {path}: {detail}. The file may be corrupt or truncated, or made for "
            f"a newer llama.cpp than this llama-cpp-python ({getattr(llama_cpp, '__version__', '?')})."
        ) from None
    loaded = LoadedLlama(llama, (n_ctx, gpu, ctx, trained), n_threads)
    if not embedding:
        loaded.formatter = LocalChatFormatter.for_llama(llama)
        loaded.meter = _LocalMeter(llama, llama_cpp)
    if not _local_log_state.get("atexit"):
        import atexit

        atexit.register(close_local_models)
        _local_log_state["atexit"] = True
    _LOCAL_LOADED[key] = loaded
    return loaded


def close_local_models() -> None:
    """Free the loaded models while the interpreter is whole (llama-cpp-python's ``__del__`` fails
    noisily when it runs during interpreter shutdown)."""
    while _LOCAL_LOADED:
        _, loaded = _LOCAL_LOADED.popitem()
        try:
            loaded.llama.close()
        except Exception:
            pass


# --- chat template ---------------------------------------------------------------------------------

# Used when a GGUF carries no chat template: Mistral's [INST] format (v1 spacing when [INST] is plain
# text in the vocabulary, v3 when it is a control token). The system prompt is placed by our code.
LOCAL_DEFAULT_TEMPLATE_V1 = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
LOCAL_DEFAULT_TEMPLATE_V3 = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)
_SYSTEM_PROBE, _USER_PROBE = "\u27e6system-probe\u27e7", "\u27e6user-probe\u27e7"


def arrange_local_messages(messages: list[dict[str, Any]], system_placement: str,
                           strip_assistant: bool = False) -> list[dict[str, Any]]:
    """Messages a Mistral chat template accepts: user/assistant alternating, the system prompt placed.

    ``system_placement``: "native" (the template handles a leading system message), "first-user"
    (Mistral v1 tokenizer: prepended to the first user message) or "last-user" (v3 and later: to the
    last one). Consecutive messages of one role are joined; roles other than these are dropped.
    ``strip_assistant`` drops the leading space of replies for templates that add their own, so a
    replayed reply tokenizes as it was generated (and the KV cache prefix still matches).
    """
    system_texts: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        text = content if isinstance(content, str) else "".join(
            piece.get("text", "") for piece in content or () if isinstance(piece, dict)
        )
        if role == "system":
            if text:
                system_texts.append(text)
        elif role in ("user", "assistant"):
            if role == "assistant" and strip_assistant:
                text = text.lstrip()
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n\n" + text
            else:
                turns.append({"role": role, "content": text})
    system = "\n\n".join(system_texts)
    if not system:
        return turns
    if system_placement == "native":
        return [{"role": "system", "content": system}, *turns]
    users = [i for i, turn in enumerate(turns) if turn["role"] == "user"]
    if not users:
        return [{"role": "user", "content": system}, *turns]
    index = users[0] if system_placement == "first-user" else users[-1]
    turns[index] = {"role": "user", "content": system + "\n\n" + turns[index]["content"]}
    return turns


class LocalChatFormatter:
    """A llama-cpp-python chat formatter: the GGUF's Jinja template, Mistral's system prompt placement.

    Installed as the ``Llama``'s ``chat_handler``, so llama-cpp-python never substitutes its built-in
    "mistral-instruct" format. Keeps the last rendered prompt (shown with ``-o verbose 1``).
    """

    def __init__(self, template: str | None, *, bos_token: str = "<s>", eos_token: str = "</s>",
                 eos_token_id: int | None = None, inst_is_control: bool = True) -> None:
        from llama_cpp.llama_chat_format import MISTRAL_INSTRUCT_CHAT_TEMPLATE, Jinja2ChatFormatter

        self.template_source = "gguf" if template else "default"
        if not template:
            template = LOCAL_DEFAULT_TEMPLATE_V3 if inst_is_control else LOCAL_DEFAULT_TEMPLATE_V1
        self.jinja = Jinja2ChatFormatter(
            template=template, eos_token=eos_token, bos_token=bos_token,
            stop_token_ids=[eos_token_id] if eos_token_id is not None and eos_token_id >= 0 else None,
        )
        self.last_prompt: str | None = None
        self.strip_assistant = self._spaces_replies()
        if self.template_source == "gguf" and self._handles_system():
            self.system_placement = "native"
        elif template == MISTRAL_INSTRUCT_CHAT_TEMPLATE or not inst_is_control:
            self.system_placement = "first-user"  # HF's classic v1 template / a v1 tokenizer (mistral-common v1)
        else:
            self.system_placement = "last-user"  # v3 and later (mistral-common)

    def _handles_system(self) -> bool:
        try:
            probe = self.jinja(messages=[{"role": "system", "content": _SYSTEM_PROBE},
                                         {"role": "user", "content": _USER_PROBE}]).prompt
        except Exception:  # raise_exception("Only user and assistant roles are supported!")
            return False
        return _SYSTEM_PROBE in probe and _USER_PROBE in probe

    def _spaces_replies(self) -> bool:
        """Whether the template puts whitespace before an assistant reply (as Mistral v3 templates do)."""
        try:
            probe = self.jinja(messages=[{"role": "user", "content": _USER_PROBE},
                                         {"role": "assistant", "content": _SYSTEM_PROBE},
                                         {"role": "user", "content": _USER_PROBE}]).prompt
        except Exception:
            return False
        at = probe.find(_SYSTEM_PROBE)
        return at > 0 and probe[at - 1].isspace()

    @classmethod
    def for_llama(cls, llama: Any) -> "LocalChatFormatter":
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        text = llama._model.token_get_text
        inst = llama.tokenize(b"[INST]", add_bos=False, special=True)
        formatter = cls(
            llama.metadata.get("tokenizer.chat_template"),
            bos_token=text(bos_id) if bos_id >= 0 else "",
            eos_token=text(eos_id) if eos_id >= 0 else "",
            eos_token_id=eos_id,
            inst_is_control=len(inst) == 1,
        )
        from llama_cpp.llama_chat_format import chat_formatter_to_chat_completion_handler

        llama.chat_handler = chat_formatter_to_chat_completion_handler(formatter)
        return formatter

    def render(self, messages: list[dict[str, Any]]) -> str:
        return self(messages=messages).prompt

    def __call__(self, *, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        arranged = arrange_local_messages(messages, self.system_placement, self.strip_assistant)
        result = self.jinja(messages=arranged, **kwargs)
        self.last_prompt = result.prompt
        if _local_log_state["verbose"]:
            sys.stderr.write(f"--- prompt rendered with the {self.template_source} chat template ---\n"
                             f"{result.prompt}\n---\n")
        return result


class _LocalMeter:
    """Counts what one completion costs: prompt tokens, prompt tokens really evaluated (the rest came
    from the KV cache) and generated tokens. Wraps the ``Llama``'s ``generate`` and ``eval``."""

    def __init__(self, llama: Any, llama_cpp: Any) -> None:
        self.prompt_tokens = self.generated = 0
        self.evaluated: int | None = None
        generate, evaluate = llama.generate, llama.eval
        vocab, is_eog = llama._model.vocab, llama_cpp.llama_vocab_is_eog

        def metered_generate(tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
            self.prompt_tokens, self.evaluated, self.generated = len(tokens), None, 0
            for token in generate(tokens, *args, **kwargs):
                if not is_eog(vocab, token):
                    self.generated += 1
                yield token

        def metered_eval(tokens: Any) -> None:
            if self.evaluated is None:
                self.evaluated = len(tokens)
            evaluate(tokens)

        llama.generate, llama.eval = metered_generate, metered_eval

    @property
    def cached(self) -> int:
        return max(0, self.prompt_tokens - (self.evaluated or 0)) if self.evaluated is not None else 0


def local_fim_tokens(llama: Any, name: str, prefix: str, suffix: str) -> list[int]:
    """Codestral's fill-in-the-middle prompt as mistral-common's ``encode_fim`` builds it:
    ``<s> [SUFFIX] suffix [PREFIX] prefix``, after which the model writes the middle and then EOS.

    Built here because llama-cpp-python's ``create_completion(suffix=...)`` hard-codes the FIM token
    ids to 0 and llama.cpp does not recognise ``[PREFIX]``/``[SUFFIX]``. As in mistral-common, the
    prefix is tokenized as plain text (with SentencePiece's leading "▁") and the suffix without that
    space: "☺" + suffix is tokenized and the sentinel's tokens dropped.
    """
    import llama_cpp

    markers = []
    for marker in (b"[SUFFIX]", b"[PREFIX]"):
        ids = llama.tokenize(marker, add_bos=False, special=True)
        if len(ids) != 1 or not llama._model.token_get_attr(ids[0]) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
            raise MistralSuiteError(f"{name} has no fill-in-the-middle tokens ([PREFIX]/[SUFFIX]); "
                                    "use a Codestral GGUF or the API's codestral-fim")
        markers.append(ids[0])
    bos = llama.token_bos()
    sentinel = len(llama.tokenize("☺".encode(), add_bos=False))
    suffix_tokens = llama.tokenize(("☺" + suffix).encode(), add_bos=False)[sentinel:] if suffix else []
    if llama.detokenize(suffix_tokens) != suffix.encode():  # the sentinel merged into the suffix
        suffix_tokens = llama.tokenize(suffix.encode(), add_bos=False)
    prefix_tokens = llama.tokenize(prefix.encode(), add_bos=False) if prefix else []
    return ([bos] if bos >= 0 and llama._model.add_bos_token() else []) + [
        markers[0], *suffix_tokens, markers[1], *prefix_tokens]


# --- models ----------------------------------------------------------------------------------------


class LocalOptions(ServerOptions):
    """Options of local GGUF models (llama.cpp); unset ones keep llama-cpp-python's defaults."""

    max_tokens: Optional[int] = Field(
        None, ge=1, description=f"Maximum number of tokens to generate (default {LOCAL_DEFAULT_MAX_TOKENS})"
    )
    temperature: Optional[float] = Field(None, ge=0, le=2, description="Sampling temperature (default 0.2)")
    top_k: Optional[int] = Field(None, ge=0, description="Sample from the k most likely tokens (0: all)")
    min_p: Optional[float] = Field(None, ge=0, le=1, description="Minimum probability relative to the top token")
    n_ctx: Optional[int] = Field(
        None, ge=16, description=f"Context window in tokens, rounded up to a multiple of 256 (default: the model's, at most {LOCAL_MAX_DEFAULT_CTX})"
    )
    n_gpu_layers: Optional[int] = Field(
        None, ge=-1, description="Layers to offload to the GPU (-1: all; default all on a GPU build, else 0)"
    )
    n_threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: half the cores)")
    verbose: Optional[bool] = Field(None, description="Show llama.cpp's log and the rendered prompt")
    suffix: Optional[str] = Field(
        None, description="Fill in the middle (Codestral GGUF files): the code after the gap; the prompt is the code before it"
    )


class _LocalChatBase:
    can_stream = True
    supports_schema = True
    supports_tools = False
    attachment_types: frozenset[str] = frozenset()
    needs_key = None
    Options = LocalOptions

    def __init__(self, info: LocalModelInfo) -> None:
        self.info = info
        self.model_id = info.model_id

    def __str__(self) -> str:
        return f"Mistral local (llama.cpp): {self.model_id}"

    def run(self, prompt: llm.Prompt, stream: bool, response: Any) -> Iterator[Any]:
        """The reply as llm events; runs llama.cpp in the calling thread."""
        options = prompt.options
        fim = options.suffix is not None  # fill in the middle: a completion from hand-built tokens
        if fim and (prompt.system or prompt.schema):
            raise MistralSuiteError("Fill-in-the-middle takes no system prompt or schema: pass the code before the gap only.")
        loaded = load_local_llama(self.info.path, n_ctx=options.n_ctx, n_gpu_layers=options.n_gpu_layers,
                                  n_threads=options.n_threads, verbose=bool(options.verbose))
        kwargs: dict[str, Any] = {
            "stream": stream,
            "max_tokens": options.max_tokens or LOCAL_DEFAULT_MAX_TOKENS,
            "model": self.model_id,
            "seed": options.seed if options.seed is not None else random.getrandbits(31),
        }
        for name in ("temperature", "top_p", "top_k", "min_p", "stop"):
            value = getattr(options, name)
            if value is not None:
                kwargs[name] = value
        if fim:
            kwargs["prompt"] = local_fim_tokens(loaded.llama, self.model_id, prompt.prompt or "", options.suffix)
            kwargs.setdefault("temperature", 0.2)  # the documented default, as in chat (create_completion's is 0.8)
        else:
            kwargs["messages"] = chat_messages(prompt, thinking=False)
        if prompt.schema:
            kwargs["response_format"] = {"type": "json_object", "schema": prompt.schema}
        endpoint = Endpoint(base_url=f"file://{self.info.path}", label=f"llama.cpp ({self.model_id})")
        decoder = ReplyDecoder(endpoint)
        with loaded.lock:
            _local_log_state["errors"].clear()
            try:
                create = loaded.llama.create_completion if fim else loaded.llama.create_chat_completion
                result = create(**kwargs)
                yield from decoder.events(result if stream else (result,))
            except MistralSuiteError:
                raise
            except Exception as exc:
                raise self._error(exc, loaded) from None
            meter, formatter = loaded.meter, loaded.formatter
            yield from decoder.finish(response, self.model_id)
            if meter is not None:
                response.set_usage(input=meter.prompt_tokens, output=meter.generated,
                                   details={"cached_tokens": meter.cached} if meter.cached else None)
            response.response_json = {
                **(response.response_json or {}),
                **({} if fim else {"chat_template": formatter.template_source if formatter else None,
                                   "system_prompt": formatter.system_placement if formatter else None}),
                "n_ctx": loaded.settings[2],
            }

    def _error(self, exc: Exception, loaded: LoadedLlama) -> MistralSuiteError:
        text = str(exc)
        found = re.search(r"Requested tokens \((\d+)\) exceed context window of (\d+)", text)
        if found:
            n_ctx, trained = loaded.settings[2], loaded.settings[3]
            raise_hint = (f"raise it with -o n_ctx N (this model was trained for up to {trained} tokens)"
                          if trained > n_ctx else "shorten it")
            return MistralSuiteError(
                f"The prompt is {found.group(1)} tokens, more than the context window of {n_ctx} tokens of "
                f"{self.model_id}. Start a new conversation or {raise_hint}."
            )
        import jinja2

        if isinstance(exc, jinja2.TemplateError) or (isinstance(exc, ValueError) and "role" in text.lower()):
            return MistralSuiteError(f"The chat template of {self.model_id} rejected the conversation: {text}")
        detail = _last_llama_error()
        return MistralSuiteError(f"llama.cpp failed on {self.model_id}: {text or type(exc).__name__}"
                                 + (f" ({detail})" if detail and detail not in text else ""))


class LocalChat(_LocalChatBase, llm.Model):
    """A GGUF chat model run in this process by llama.cpp."""

    def execute(self, prompt, stream, response, conversation):  # type: ignore[override]
        yield from self.run(prompt, stream, response)


class AsyncLocalChat(_LocalChatBase, llm.AsyncModel):
    """Async twin of ``LocalChat``: llama.cpp runs in a worker thread, one step per event."""

    async def execute(self, prompt, stream, response, conversation):  # type: ignore[override]
        import asyncio

        events = self.run(prompt, stream, response)
        done = object()
        try:
            while True:
                event = await asyncio.to_thread(next, events, done)
                if event is done:
                    break
                yield event
        finally:
            events.close()


class LocalEmbedding(llm.EmbeddingModel):
    """A GGUF embedding model (mean pooling: one vector per input)."""

    supports_text = True
    supports_binary = False
    batch_size = 32
    needs_key = None

    def __init__(self, info: LocalModelInfo) -> None:
        self.info = info
        self.model_id = info.model_id

    def embed_batch(self, items: Iterable[Any]) -> Iterator[list[float]]:
        loaded = load_local_llama(self.info.path, embedding=True)
        texts = [item if isinstance(item, str) else bytes(item).decode("utf-8", "replace") for item in items]
        with loaded.lock:
            _local_log_state["errors"].clear()
            try:
                vectors = loaded.llama.embed(texts)
            except Exception as exc:
                detail = _last_llama_error()
                raise MistralSuiteError(f"llama.cpp could not embed with {self.model_id}: {exc}"
                                        + (f" ({detail})" if detail else "")) from None
        return iter([list(map(float, vector)) for vector in vectors])


# --- download ---------------------------------------------------------------------------------------


def hf_base_url() -> str:
    return (os.environ.get(HF_BASE_URL_ENV) or "https://huggingface.co").rstrip("/")


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


def local_models_dir() -> Path:
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


# ---------------------------------------------------------------------------------------------
# 6. Commands
# ---------------------------------------------------------------------------------------------


@click.group(name="mistral")
def mistral_group() -> None:
    """Mistral models: the API catalog, local GGUF files and OpenAI-compatible servers."""


@mistral_group.command(name="models")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
def models_command(as_json: bool) -> None:
    """List the Mistral API models llm knows (built in, plus `llm mistral refresh`)."""
    entries = load_catalog()
    rows = [
        {
            "id": entry.model_id,
            "aliases": list(entry.aliases),
            "status": entry.status,
            "deprecation_date": entry.deprecation_date,
            "replacement": entry.replacement,
            "context": entry.context,
            "capabilities": sorted(entry.capabilities),
        }
        for entry in entries
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("id", "aliases", "status", "context", "capabilities")
    table = [
        (
            row["id"],
            ", ".join(row["aliases"]),
            row["status"] + (f" {row['deprecation_date']}" if row["deprecation_date"] else "")
            + (f" -> {row['replacement']}" if row["replacement"] and row["status"] != GA else ""),
            f"{row['context'] // 1024}k" if row["context"] else "",
            " ".join(row["capabilities"]),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    for line in [header, *table]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


@mistral_group.command(name="refresh")
@click.option("--key", help="Mistral API key to use")
def refresh_command(key: str | None) -> None:
    """Fetch Mistral's model list (GET /v1/models) into llm's user directory."""
    cards = request_json(mistral_endpoint(), "GET", "/models", mistral_key(key)).get("data")
    if not isinstance(cards, list):
        raise MistralSuiteError("Mistral's API answered /v1/models without a model list.")
    known = {entry.api_name for entry in load_catalog()}
    path = catalog_cache_path()
    _write_json(path, {"fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(), "data": cards})
    new = sorted(card["id"] for card in cards if card.get("id") not in known)
    click.echo(f"{len(cards)} models from Mistral's API saved to {path}")
    if new:
        click.echo("New: " + ", ".join(new))


@mistral_group.command(name="fim")
@click.argument("prefix", required=False)
@click.option("--suffix", help="The code after the gap")
@click.option("--prefix-file", type=click.File("r"), help="Read the code before the gap from this file")
@click.option("--suffix-file", type=click.File("r"), help="Read the code after the gap from this file")
@click.option("--file", "source", type=click.File("r"), help="Split this file at --line into prefix and suffix")
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
        prefix, suffix = split_at_cursor(source.read(), cursor)
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
        prefix = prefix_file.read() if prefix_file else stdin.read()
    if suffix_file is not None:
        suffix = suffix_file.read()
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


@mistral_group.group(name="servers")
def servers_group() -> None:
    """OpenAI-compatible servers (llamafile, llama.cpp, Ollama, vLLM) as llm models."""


@servers_group.command(name="add")
@click.argument("name")
@click.argument("url")
@click.option("--model", help="Model name the server expects (default: the first one its /models lists)")
@click.option("--key-name", help="Name of the key in `llm keys` to send to this server")
@click.option("--alias", "aliases", multiple=True, help="Alias for the model (repeatable)")
@click.option("--embedding", is_flag=True, help="Use the server's /embeddings endpoint with `llm embed`")
def servers_add(name: str, url: str, model: str | None, key_name: str | None, aliases: tuple[str, ...],
                embedding: bool) -> None:
    """Register the server at URL (such as http://127.0.0.1:8000/v1) as model NAME."""
    if not re.match(r"https?://[^/]+", url):
        raise click.BadParameter("give the server's base URL, such as http://127.0.0.1:8000/v1", param_hint="URL")
    if name == LLAMAFILE.name or name in LLAMAFILE.aliases:
        raise click.BadParameter(f"{name} is built in; set LLM_LLAMAFILE_BASE_URL to move it", param_hint="NAME")
    url = url.rstrip("/")
    if re.fullmatch(r"https?://[^/]+", url):
        url += "/v1"  # OpenAI-compatible servers (llamafile, llama.cpp, Ollama, vLLM) serve under /v1
    saved = _saved_servers()
    saved[name] = {"url": url, "model": model, "key_name": key_name, "aliases": list(aliases),
                   "embedding": embedding}
    _write_json(servers_path(), saved)
    click.echo(f"Added {name} ({'embeddings' if embedding else 'chat'}) at {url}")


@servers_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
def servers_list(as_json: bool) -> None:
    """List the servers llm can use."""
    servers = load_servers()
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
    saved = _saved_servers()
    if name not in saved:
        raise click.ClickException(f"No server named {name!r}; `llm mistral servers list` shows them.")
    del saved[name]
    _write_json(servers_path(), saved)
    click.echo(f"Removed {name}")


def _saved_servers() -> dict[str, Any]:
    try:
        saved = json.loads(servers_path().read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise click.ClickException(f"{servers_path()} is not valid JSON; fix or delete it.") from None
    return saved if isinstance(saved, dict) else {}


# --- llm mistral local ... -------------------------------------------------------------------
@mistral_group.group(name="local")
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
            row.update(size=info.file_size, architecture=info.architecture, context=info.context_length,
                       experts=info.expert_count, experts_used=info.expert_used_count,
                       embedding_length=info.embedding_length)
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
            facts = [human_size(row["size"]), f"architecture {row['architecture']}"]
            if row["context"]:
                facts.append(f"context {row['context']}")
            if row["experts"]:
                facts.append(f"MoE {row['experts']} experts ({row['experts_used']} per token)")
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
    entry = LOCAL_DOWNLOADS.get(model.removeprefix(LOCAL_PREFIX).removesuffix("-local"))
    if entry is None:
        raise MistralSuiteError(f"Unknown model {model!r}. Downloadable: {', '.join(LOCAL_DOWNLOADS)}.")
    key = model.removeprefix(LOCAL_PREFIX).removesuffix("-local")
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
    name = name or key
    granted = add_local_model(name, paths[0], [*entry["aliases"], *aliases], strict_aliases=False,
                              extra={"download": key})
    extra = f" (aliases: {', '.join(granted)})" if granted else ""
    click.echo(f"Registered mistral-local/{name}{extra}: {paths[0]}")
