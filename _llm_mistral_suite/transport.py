"""HTTP for every route: one reused client per process (and per event loop), JSON requests and SSE streams, retried.

The retry decisions are ``retry.Attempts`` (no I/O); the sync and async twins here differ only in the lines
that await.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, BinaryIO, Iterator, NamedTuple, Optional

from .errors import MistralSuiteError, not_utf8, service_message, shown_text
from .retry import Attempts, Pace, RetryLater, stream_cut_error
from .settings import Endpoint, connect_timeout, timeout_seconds

if TYPE_CHECKING:
    import httpx

# Yielded by the chunk streams at ``data: [DONE]``: the server says it finished (the decoder then accepts a
# reply whose last chunk had no finish_reason). It has no choices, so it costs nothing on the per-chunk path.
STREAM_DONE: dict[str, Any] = {"choices": ()}

_sync_client: Optional["httpx.Client"] = None
_async_client: Optional[tuple[Any, "httpx.AsyncClient"]] = None  # (event loop, client)


def _client_settings() -> dict[str, Any]:
    import httpx

    return {
        "timeout": httpx.Timeout(timeout_seconds(), connect=connect_timeout()),
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


def decode_json(endpoint: Endpoint, raw: bytes | str, key: str | None = None) -> Any:
    """A JSON answer, or a clear error when the server sent something else."""
    try:
        return json.loads(raw)
    except ValueError:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        raise MistralSuiteError(f"{endpoint.label} sent something that is not JSON: {shown_text(text, key, 200)!r}") from None


def is_error_event(event: Any) -> bool:
    """Whether an SSE payload, decoded, is the service reporting an error."""
    return isinstance(event, dict) and (event.get("object") == "error" or "error" in event)


def stream_error(endpoint: Endpoint, data: str, key: str | None, reported: bool,
                 what: str = "stream chunk") -> MistralSuiteError:
    """The error for an SSE payload a stream should not carry: in the service's words when it ``reported`` an
    error, else the payload quoted; either way decoded before ``key`` is redacted."""
    if reported:
        return MistralSuiteError(f"{endpoint.label} reported an error mid-stream: {service_message(data.encode(), key)}")
    return MistralSuiteError(f"{endpoint.label} sent a malformed {what}: {shown_text(data, key, 200)!r}")


def decode_event(endpoint: Endpoint, data: str, key: str | None = None) -> dict[str, Any]:
    """One SSE data payload as a chunk dict; an error event or a malformed chunk is an error."""
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if chunk.__class__ is not dict or "choices" not in chunk:
        raise stream_error(endpoint, data, key, is_error_event(chunk))
    return chunk


def is_event_stream(response: "httpx.Response") -> bool:
    """Whether the server streams as asked (some ignore ``"stream": true`` and answer with one JSON)."""
    return response.headers.get("content-type", "").startswith("text/event-stream")


class Payload(NamedTuple):
    """What a request sends: a JSON body, or a multipart form (``files``: name -> (filename, file or bytes,
    MIME type); file objects are rewound before each attempt), plus query parameters."""

    json: Any = None
    files: Optional[dict[str, tuple[str, Any, str]]] = None
    data: Optional[dict[str, Any]] = None
    params: Optional[dict[str, Any]] = None

    def build(self, client: Any, method: str, url: str, headers: dict[str, str]) -> "httpx.Request":
        for _, content, _ in (self.files or {}).values():
            if hasattr(content, "seek"):
                content.seek(0)
        try:
            return client.build_request(method, url, json=self.json, files=self.files, data=self.data,
                                        params=self.params, headers=headers)
        except UnicodeEncodeError as exc:  # text read from bytes that are not UTF-8
            bad = next(_texts_not_utf8(self.json), None) or not_utf8(exc.object)
            raise MistralSuiteError(f"The text to send {bad}") from None


def _texts_not_utf8(value: Any) -> Iterator[str]:
    """What ``not_utf8`` says of each string in a JSON body that cannot be sent."""
    if isinstance(value, str):
        problem = not_utf8(value)
        if problem:
            yield problem
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts_not_utf8(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts_not_utf8(item)


def request(
    endpoint: Endpoint, method: str, path: str, key: str | None, payload: Payload = Payload(),
    pace: Pace | None = None,
) -> "httpx.Response":
    """One request with retries; the successful response, its body read.

    With a ``pace``, waits are shared with the other workers of the same job instead of slept alone.
    """
    import httpx

    client = sync_client()
    attempts = Attempts(endpoint, key)
    for _ in attempts:
        try:
            with pace or contextlib.nullcontext():
                try:
                    response = client.send(payload.build(client, method, endpoint.base_url + path, endpoint.headers(key)))
                except (httpx.TransportError, httpx.InvalidURL) as exc:
                    attempts.check_transport_error(exc)
                if response.status_code >= 300:
                    attempts.check_status(response.status_code, response.headers, response.content)
                return response
        except RetryLater as retry:
            if pace is None:
                time.sleep(retry.delay)
            else:
                pace.slow_down(retry.delay)
    raise AssertionError("unreachable: the last attempt raises")


async def arequest(
    endpoint: Endpoint, method: str, path: str, key: str | None, payload: Payload = Payload()
) -> "httpx.Response":
    """Async twin of ``request``."""
    import asyncio

    import httpx

    client = async_client()
    attempts = Attempts(endpoint, key)
    for _ in attempts:
        try:
            try:
                response = await client.send(payload.build(client, method, endpoint.base_url + path, endpoint.headers(key)))
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                attempts.check_transport_error(exc)
            if response.status_code >= 300:
                attempts.check_status(response.status_code, response.headers, response.content)
            return response
        except RetryLater as retry:
            await asyncio.sleep(retry.delay)
    raise AssertionError("unreachable: the last attempt raises")


def download(endpoint: Endpoint, path: str, key: str | None, dest: BinaryIO, chunk_size: int = 1 << 20) -> int:
    """GET ``path`` into ``dest`` (streamed, never all in memory), retried from the start while nothing was
    written; returns the byte count. A connection lost part-way is an error: ``dest`` is then incomplete."""
    import httpx

    client = sync_client()
    attempts = Attempts(endpoint, key)
    for _ in attempts:
        written = 0
        try:
            try:
                response = client.send(client.build_request("GET", endpoint.base_url + path,
                                                            headers=endpoint.headers(key) | {"Accept": "*/*"}), stream=True)
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                attempts.check_transport_error(exc)
            try:
                if response.status_code >= 300:
                    attempts.check_status(response.status_code, response.headers, response.read())
                for block in response.iter_bytes(chunk_size):
                    dest.write(block)
                    written += len(block)
                return written
            except httpx.TransportError as exc:
                if written:
                    raise MistralSuiteError(
                        f"{endpoint.label} dropped the connection after {written:,} bytes of {path}; try again."
                    ) from None
                attempts.check_transport_error(exc)
            finally:
                response.close()
        except RetryLater as retry:
            time.sleep(retry.delay)
    raise AssertionError("unreachable: the last attempt raises")


def request_json(
    endpoint: Endpoint, method: str, path: str, key: str | None, body: Any = None, pace: Pace | None = None
) -> Any:
    """One JSON request with retries; the decoded JSON answer."""
    return decode_json(endpoint, request(endpoint, method, path, key, Payload(json=body), pace).content, key)


async def arequest_json(endpoint: Endpoint, method: str, path: str, key: str | None, body: Any = None) -> Any:
    """Async twin of ``request_json``."""
    return decode_json(endpoint, (await arequest(endpoint, method, path, key, Payload(json=body))).content, key)


def stream_events(
    endpoint: Endpoint, method: str, path: str, key: str | None, payload: Payload
) -> Iterator[tuple[Optional[str], str]]:
    """Send a streaming request and yield each SSE event's ``(event name, data)``; a server that answered
    with one JSON body instead yields ``(None, body)``. Retries until the first event, never after: a
    connection lost after it is a ``StreamCutError``."""
    import httpx
    from httpx_sse import EventSource

    client = sync_client()
    headers = endpoint.headers(key) | {"Accept": "text/event-stream"}
    attempts = Attempts(endpoint, key)
    for _ in attempts:
        started = False
        try:
            try:
                response = client.send(payload.build(client, method, endpoint.base_url + path, headers), stream=True)
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                attempts.check_transport_error(exc)
            try:
                if response.status_code >= 300:
                    attempts.check_status(response.status_code, response.headers, response.read())
                if not is_event_stream(response):
                    yield None, response.read().decode("utf-8", "replace")
                    return
                for event in EventSource(response).iter_sse():
                    started = started or bool(event.data)
                    yield event.event, event.data
                return
            except httpx.TransportError as exc:
                if started:
                    raise stream_cut_error(endpoint, exc) from None
                attempts.check_transport_error(exc)
            finally:
                response.close()
        except RetryLater as retry:
            time.sleep(retry.delay)


async def astream_events(
    endpoint: Endpoint, method: str, path: str, key: str | None, payload: Payload
) -> AsyncIterator[tuple[Optional[str], str]]:
    """Async twin of ``stream_events``."""
    import asyncio

    import httpx
    from httpx_sse import EventSource

    client = async_client()
    headers = endpoint.headers(key) | {"Accept": "text/event-stream"}
    attempts = Attempts(endpoint, key)
    for _ in attempts:
        started = False
        try:
            try:
                response = await client.send(payload.build(client, method, endpoint.base_url + path, headers), stream=True)
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                attempts.check_transport_error(exc)
            try:
                if response.status_code >= 300:
                    attempts.check_status(response.status_code, response.headers, await response.aread())
                if not is_event_stream(response):
                    yield None, (await response.aread()).decode("utf-8", "replace")
                    return
                async for event in EventSource(response).aiter_sse():
                    started = started or bool(event.data)
                    yield event.event, event.data
                return
            except httpx.TransportError as exc:
                if started:
                    raise stream_cut_error(endpoint, exc) from None
                attempts.check_transport_error(exc)
            finally:
                await response.aclose()
        except RetryLater as retry:
            await asyncio.sleep(retry.delay)


def stream_chunks(endpoint: Endpoint, path: str, key: str | None, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """POST a streaming chat-shaped request and yield its chunks, and ``STREAM_DONE`` at ``[DONE]`` (the
    decoder judges by it and ``finish_reason`` whether the reply was complete)."""
    for name, data in stream_events(endpoint, "POST", path, key, Payload(json=body)):
        if name is None:
            yield decode_json(endpoint, data, key)
        elif data == "[DONE]":
            yield STREAM_DONE
            return
        elif data:
            yield decode_event(endpoint, data, key)


async def astream_chunks(
    endpoint: Endpoint, path: str, key: str | None, body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """Async twin of ``stream_chunks``."""
    async for name, data in astream_events(endpoint, "POST", path, key, Payload(json=body)):
        if name is None:
            yield decode_json(endpoint, data, key)
        elif data == "[DONE]":
            yield STREAM_DONE
            return
        elif data:
            yield decode_event(endpoint, data, key)
