"""Every Mistral model in llm: Mistral's API, local GGUF files and OpenAI-compatible servers.

The module reads in the order data flows:

1. Model catalog: what exists, built in and refreshed from ``GET /v1/models``.
2. Hooks: how llm discovers models and commands (cheap, offline, never raising).
3. HTTP transport: one reused client, retries with backoff and ``Retry-After``, SSE reading.
4. Translation: llm's ``prompt.messages`` to OpenAI-style chat messages, and chunks back to events.
5. Model classes: Mistral API chat.
6. Commands: ``llm mistral ...``.

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
    _entry("codestral-latest", "codestral", context=262144, caps="chat tools fim"),
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
    try:
        cards = json.loads(catalog_cache_path().read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return list(entries.values())
    for card in cards:
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


def retired_message(entry: CatalogEntry) -> str:
    when = f" on {entry.deprecation_date}" if entry.deprecation_date else ""
    routes = []
    if entry.replacement:
        routes.append(f"use {entry.replacement} on the API (llm -m mistral/{entry.replacement})")
    if entry.local_route:
        routes.append(
            f"run {entry.description or entry.api_name} yourself: `llm mistral local download {entry.local_route}`"
            " (llama.cpp) or a llamafile (`llm -m llamafile`)"
        )
    return f"{entry.api_name} was retired from Mistral's API{when}. Instead, " + "; or ".join(routes) + "."


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
_async_clients: dict[int, "httpx.AsyncClient"] = {}


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
    """One async client per event loop (an ``httpx.AsyncClient`` is bound to the loop it runs on)."""
    import asyncio

    import httpx

    loop = asyncio.get_running_loop()
    client = _async_clients.get(id(loop))
    if client is None or client.is_closed:
        _async_clients.clear()  # a new loop means the old ones are gone (asyncio.run per CLI call)
        client = _async_clients[id(loop)] = httpx.AsyncClient(**_client_settings())
    return client


class Pace:
    """Shared by concurrent workers of one job: a 429 makes every worker wait out ``Retry-After``,
    and halves how many requests may be in flight (it grows back by one per success)."""

    def __init__(self, limit: int) -> None:
        import threading

        self.limit = self.ceiling = max(1, limit)
        self.active = 0
        self.not_before = 0.0
        self.condition = threading.Condition()

    def __enter__(self) -> "Pace":
        with self.condition:
            while True:
                wait = self.not_before - time.monotonic()
                if self.active < self.limit and wait <= 0:
                    break
                self.condition.wait(timeout=wait if wait > 0 else None)
            self.active += 1
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self.condition:
            self.active -= 1
            if exc_info[0] is None and self.limit < self.ceiling:
                self.limit += 1
            self.condition.notify_all()

    def slow_down(self, delay: float) -> None:
        with self.condition:
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


def tool_definitions(prompt: llm.Prompt) -> list[dict[str, Any]]:
    return [
        {"type": "function",
         "function": {"name": tool.name, "description": tool.description or "",
                      "parameters": tool.input_schema or {"type": "object", "properties": {}}}}
        for tool in prompt.tools
        if isinstance(tool, llm.Tool)
    ]


class ReplyDecoder:
    """Turns OpenAI-shaped reply chunks (streamed deltas or one whole message) into llm events.

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
        delta = choice.get("delta") or choice.get("message") or {}
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
    take = decoder.take
    if stream:
        chunks: Iterable[dict[str, Any]] = stream_chunks(endpoint, path, key, body)
    else:
        chunks = (request_json(endpoint, "POST", path, key, body),)
    for chunk in chunks:
        out = take(chunk)
        if out is None:
            continue
        if out.__class__ is str:
            yield out
        else:
            yield from out
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


class OptionsBase(llm.Options):
    """llm options whose validator is built on first use: building it at import would cost every
    `llm` command milliseconds."""

    model_config = ConfigDict(defer_build=True, extra="forbid")


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


class MistralOptions(OptionsBase):
    """Options of Mistral's chat API; each is sent only when set."""

    temperature: Optional[float] = Field(None, ge=0, le=1.5, description="Sampling temperature, 0 to 1.5")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling probability mass, (0, 1]")
    max_tokens: Optional[int] = Field(None, ge=1, description="Maximum number of tokens to generate")
    stop: Optional[Union[str, list[str]]] = Field(None, description="Stop sequence, or a JSON list of them")
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

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return _json_list_or_str(value)


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
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": strict_schema(prompt.schema), "strict": True},
            }
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
        yield from run_reply(mistral_endpoint(), "/chat/completions", key, body, stream, response, self.entry.api_name)


class AsyncMistralChat(_MistralChatBase, llm.AsyncKeyModel):
    """Async twin of ``MistralChat``."""

    async def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        body = self.request_body(prompt, stream)
        endpoint = mistral_endpoint()
        async for event in arun_reply(endpoint, "/chat/completions", key, body, stream, response, self.entry.api_name):
            yield event


# ---------------------------------------------------------------------------------------------
# 5b. Embeddings
# ---------------------------------------------------------------------------------------------

MAX_INPUTS_PER_REQUEST = 512
MAX_TOKENS_PER_REQUEST = 16384
MAX_TOKENS_PER_INPUT = 8192
CODESTRAL_EMBED_DIMENSIONS = (256, 512, 1024, 1536, 3072)


def estimate_tokens(text: str) -> int:
    """A deliberately high token count without a tokenizer: Mistral's tokenizers average about four
    UTF-8 bytes a token on English prose and fewer on code and other scripts; we assume three."""
    return len(text.encode("utf-8")) // 3 + 1


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


def _item_label(index: int) -> str:
    """Name item ``index`` of the batch llm handed us: its id when ``llm embed-multi`` has one."""
    frame = sys._getframe()
    while frame is not None:  # llm's Collection.embed_multi_with_metadata holds the (id, content) rows
        rows = frame.f_locals.get("filtered_batch") if frame.f_code.co_name == "embed_multi_with_metadata" else None
        if isinstance(rows, list) and index < len(rows):
            return f"item {rows[index][0]!r}"
        frame = frame.f_back
    return f"item {index + 1} of this batch"


def _too_many(error: MistralSuiteError) -> bool:
    return error.status == 400 and "too many" in error.detail.lower()


class EmbeddingJob:
    """One ``embed_batch`` call: packs requests, runs them on a few threads, splits what the service
    finds too big, and returns the vectors in input order."""

    def __init__(self, model: "MistralEmbedding", texts: list[str], key: str | None) -> None:
        self.model, self.texts, self.key = model, texts, key
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
        body = self.model.request_body([self.texts[i] for i in batch])
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
        if len(batch) == 1 or (match and int(match.group(1)) < len(batch)):
            index = batch[0] if len(batch) == 1 else batch[int(match.group(1))]
            what = f"{_item_label(index)} could not be embedded: {error.detail or error.message}"
        else:
            what = error.message
        return MistralSuiteError(
            f"{what}. Nothing from this batch of {len(self.texts)} items was stored "
            "(earlier batches of `llm embed-multi`, if any, were).",
            status=error.status, detail=error.detail,
        )

    def vectors(self, answer: Any, batch: range) -> list[list[float]]:
        endpoint = self.model.endpoint()
        try:
            rows = sorted(answer["data"], key=lambda row: row["index"])
            vectors = [row["embedding"] for row in rows]
        except (KeyError, TypeError):
            raise MistralSuiteError(f"{endpoint.label} answered /embeddings without embeddings.") from None
        if len(vectors) != len(batch):
            raise MistralSuiteError(
                f"{endpoint.label} returned {len(vectors)} embeddings for {len(batch)} inputs; nothing was stored."
            )
        expected = self.model.dimensions or len(vectors[0])
        for vector in vectors:
            if len(vector) != expected:
                raise MistralSuiteError(
                    f"{endpoint.label} returned a {len(vector)}-dimension vector for {self.model.model_id}, "
                    f"which has {expected}; nothing was stored."
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

    def request_body(self, texts: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.api_name, "input": texts}
        if self.output_dimension:
            body["output_dimension"] = self.output_dimension
        return body

    def embed_batch(self, items: Iterable[str | bytes], *, key: str | None = None) -> Iterator[list[float]]:
        texts = list(items)
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise MistralSuiteError(
                    f"{_item_label(index)} is empty; Mistral's API cannot embed empty text. "
                    f"Nothing from this batch of {len(texts)} items was stored."
                )
            if len(text.encode("utf-8")) // 6 > MAX_TOKENS_PER_INPUT:  # too long even by a low estimate
                raise MistralSuiteError(
                    f"{_item_label(index)} is too long to embed (about {estimate_tokens(text)} tokens; "
                    f"the limit is {MAX_TOKENS_PER_INPUT}). Split it into smaller pieces. "
                    f"Nothing from this batch of {len(texts)} items was stored."
                )
        if texts:
            yield from EmbeddingJob(self, texts, key or self.get_key()).run()


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
    stop: Optional[Union[str, list[str]]] = Field(None, description="Stop sequence, or a JSON list of them")
    random_seed: Optional[int] = Field(None, ge=0, description="Seed for deterministic sampling")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return _json_list_or_str(value)


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
        name = options.model or FIM_DEFAULT_MODEL
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
        if self.name == LLAMAFILE.name:
            label = f"the llamafile at {self.url}"
            start = f"Start one with `{LLAMAFILE_START}`, or set LLM_LLAMAFILE_BASE_URL to where it listens."
        else:
            label = f"the server {self.name!r} at {self.url}"
            start = f"Start it, or change its URL with `llm mistral servers add {self.name} URL`."
        return Endpoint(
            base_url=self.url.rstrip("/"),
            label=label,
            key_hint=f"Set its key with `llm keys set {self.key_name}`." if self.key_name else
            f"It needs a key: `llm mistral servers add {self.name} {self.url} --key-name NAME`.",
            start_hint=start,
            retry_refused=False,
        )

    def key(self, explicit: str | None) -> str | None:
        if not self.key_name:
            return None
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
    try:
        saved = json.loads(servers_path().read_text())
        added = [ServerConfig(name=name, **{**config, "aliases": tuple(config.get("aliases", ()))})
                 for name, config in saved.items()]
    except (OSError, ValueError, TypeError, AttributeError):
        added = []
    return [llamafile] + [server for server in added if server.name != llamafile.name]


_discovered_models: dict[str, str] = {}


def wire_model(server: ServerConfig, key: str | None) -> str:
    """The model name to send: configured, or the first one the server lists (once per process)."""
    if server.model:
        return server.model
    if server.url not in _discovered_models:
        listing = request_json(server.endpoint(), "GET", "/models", key)
        try:
            _discovered_models[server.url] = listing["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            raise MistralSuiteError(
                f"{server.endpoint().label} lists no model at /models; name one with "
                f"`llm mistral servers add {server.name} {server.url} --model MODEL`."
            ) from None
    return _discovered_models[server.url]


class ServerOptions(OptionsBase):
    """Sampling options every OpenAI-compatible server takes; each is sent only when set."""

    temperature: Optional[float] = Field(None, ge=0, le=2, description="Sampling temperature, 0 to 2")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling probability mass, (0, 1]")
    max_tokens: Optional[int] = Field(None, ge=1, description="Maximum number of tokens to generate")
    stop: Optional[Union[str, list[str]]] = Field(None, description="Stop sequence, or a JSON list of them")
    seed: Optional[int] = Field(None, description="Seed for deterministic sampling")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return _json_list_or_str(value)


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
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": strict_schema(prompt.schema), "strict": True},
            }
        return body


class ServerChat(_ServerChatBase, llm.KeyModel):
    """Chat with a model served by llamafile, llama.cpp's server, Ollama, vLLM or similar."""

    def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        model = wire_model(self.server, key)
        body = self.request_body(prompt, stream, model)
        yield from run_reply(self.server.endpoint(), "/chat/completions", key, body, stream, response, model)


class AsyncServerChat(_ServerChatBase, llm.AsyncKeyModel):
    async def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[override]
        model = wire_model(self.server, key)  # cached after the first call of the process
        body = self.request_body(prompt, stream, model)
        endpoint = self.server.endpoint()
        async for event in arun_reply(endpoint, "/chat/completions", key, body, stream, response, model):
            yield event


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

    def request_body(self, texts: list[str]) -> dict[str, Any]:
        return {"model": wire_model(self.server, self.get_key()), "input": texts}


# ---------------------------------------------------------------------------------------------
# 5e. Local GGUF models (llama.cpp)
# ---------------------------------------------------------------------------------------------


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
@click.option("-m", "--model", "model_name", help="A FIM model: codestral-fim (default) or e.g. codestral-2508")
@click.option("-o", "--option", "options", type=(str, str), multiple=True, help="Option, e.g. -o max_tokens 64")
@click.option("--no-stream", is_flag=True, help="Wait for the whole middle")
@click.option("--key", help="Mistral API key to use")
@click.option("-n", "--no-log", is_flag=True, help="Don't log to logs.db")
def fim_command(prefix, suffix, prefix_file, suffix_file, source, cursor, model_name, options, no_stream, key, no_log):
    """Fill in the middle with Codestral: print only the code that goes between PREFIX and --suffix.

    The prefix comes from PREFIX, --prefix-file, --file with --line, or standard input.
    """
    import sqlite_utils
    from llm.cli import logs_db_path, logs_on, render_errors
    from llm.migrations import migrate
    from pydantic import ValidationError

    if source is not None:
        if cursor is None:
            raise click.UsageError("--file needs --line N or --line N:COL")
        prefix, suffix = split_at_cursor(source.read(), cursor)
    elif prefix is None:
        prefix = prefix_file.read() if prefix_file else click.get_text_stream("stdin").read()
    if suffix_file is not None:
        suffix = suffix_file.read()
    model = llm.get_model("codestral-fim")
    settings = dict(options)
    if model_name and model_name not in ("codestral-fim", model.model_id):
        settings["model"] = model_name
    if suffix is not None:
        settings["suffix"] = suffix
    try:
        validated = {name: value for name, value in FIMOptions(**settings) if value is not None}
    except ValidationError as error:
        raise click.ClickException(render_errors(error.errors()))
    response = model.prompt(prefix, stream=not no_stream, key=key, **validated)
    for chunk in response:
        click.echo(chunk, nl=False)
    if logs_on() and not no_log:
        db = sqlite_utils.Database(logs_db_path())
        migrate(db)
        response.log_to_db(db)


def split_at_cursor(text: str, cursor: str) -> tuple[str, str]:
    """Split ``text`` at ``N`` (the start of line N) or ``N:COL`` (before column COL), both 1-based."""
    match = re.fullmatch(r"(\d+)(?::(\d+))?", cursor.strip())
    if not match:
        raise click.BadParameter("use N or N:COL, e.g. --line 12:5", param_hint="--line")
    line, column = int(match.group(1)), int(match.group(2) or 1)
    lines = text.splitlines(keepends=True)
    if not 1 <= line <= len(lines) + 1:
        raise click.BadParameter(f"the file has {len(lines)} lines", param_hint="--line")
    current = lines[line - 1] if line <= len(lines) else ""
    if not 1 <= column <= len(current.rstrip("\r\n")) + 1:
        raise click.BadParameter(f"line {line} has {len(current.rstrip(chr(10)))} characters", param_hint="--line")
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
    if name == LLAMAFILE.name:
        raise click.BadParameter(f"{name} is built in; set LLM_LLAMAFILE_BASE_URL to move it", param_hint="NAME")
    saved = _saved_servers()
    saved[name] = {"url": url.rstrip("/"), "model": model, "key_name": key_name, "aliases": list(aliases),
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


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, so an interrupted write never leaves a broken file behind."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


# --- llm mistral local ... -------------------------------------------------------------------
