"""A small fake of Mistral's HTTP API on loopback, for offline tests and benchmarks (stdlib only)."""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import math
import random
import re
import socket
import socketserver
import string
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Union

SSE_TYPE = "text/event-stream; charset=utf-8"
RETIRED = frozenset(
    {"open-mistral-7b", "open-mixtral-8x7b", "open-mixtral-8x22b", "open-codestral-mamba", "mistral-tiny"}
)
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_ALNUM = string.ascii_letters + string.digits


def count_tokens(text: str) -> int:
    """The fake's tokenizer, deliberately pessimistic.

    Every word (``\\w+``) and every other non-space character costs ceil(UTF-8 bytes / 4) tokens, at least 1.
    English prose comes out at about 1.3x a ``len(text) / 4`` estimate; punctuation-heavy text and
    non-ASCII text cost more (``"!!!!"`` is 4 tokens, a CJK character about 0.75). Whitespace is free.
    """
    return sum((len(m.encode()) + 3) // 4 for m in _TOKEN_RE.findall(text))


_WORDS = (
    "the of and to in is was that for on with as by at from this which be are or an it not have had but were "
    "their has its one all also more other some been can into than time first new would these two may retrieval "
    "embedding vector database document search language model tokenizer request latency concurrency benchmark "
    "collection similarity semantic paragraph sentence index query ranking"
).split()


def documents(count: int, tokens: int = 100, seed: int = 0) -> list[str]:
    """``count`` distinct English-like documents of about ``tokens`` tokens each (by ``count_tokens``)."""
    rng = random.Random(seed)
    docs = []
    for number in range(count):
        words = [f"Document {number}:"]
        total = count_tokens(words[0]) + 1  # the final "."; counts add up across spaces
        while total < tokens:
            words.append(rng.choice(_WORDS))
            total += count_tokens(words[-1])
        docs.append(" ".join(words) + ".")
    return docs


# --- replies -------------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str  # as sent, query string included
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    raw: bytes


@dataclass
class JSONReply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SSEReply:
    """``data: <json>`` events (a str is sent as the raw data payload), then ``data: [DONE]`` if ``done``.

    Normal streams use chunked encoding (keep-alive). With ``cut_after=N`` (N counts events, [DONE]
    included) or ``reset=True`` the body is close-delimited (``Connection: close``): after N events (or all
    of them) the server closes the socket (FIN), or resets it (RST, SO_LINGER 0) when ``reset``.
    ``event_delay`` is slept before each event.
    """

    events: list[Union[dict, str]]
    done: bool = True
    cut_after: int | None = None
    event_delay: float = 0.0
    status: int = 200
    reset: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RawReply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ResetReply:
    """Read the request, then reset the TCP connection without answering."""


@dataclass
class FileReply:
    """Replay a recorded body byte for byte (content type from the suffix: .sse or JSON)."""

    path: str | Path
    content_type: str | None = None


Reply = Union[JSONReply, SSEReply, RawReply, ResetReply, FileReply]

_ERROR_CODES = {400: "3210", 429: "3505"}


def error_reply(
    status: int,
    message: Any,
    retry_after: float | None = None,
    *,
    type: str = "invalid_request_error",
    code: Any = None,
) -> JSONReply:
    """A Mistral-style error body (code defaults to "3210" for 400, "3505" for 429, else null);
    a ``Retry-After`` header when ``retry_after`` is given."""
    code = code or _ERROR_CODES.get(status)
    body = {"object": "error", "message": message, "type": type, "param": None, "code": code}
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return JSONReply(body, status, headers)


def _usage(usage: dict | None, completion_tokens: int) -> dict:
    return usage or {
        "prompt_tokens": 10, "total_tokens": 10 + completion_tokens, "completion_tokens": completion_tokens,
    }


def chat_stream_events(
    text_pieces: list[str],
    model: str = "mistral-large-2512",
    finish_reason: str = "stop",
    usage: dict | None = None,
    *,
    tool_calls: list[dict] | None = None,
) -> list[dict]:
    """Chunks like the real service: role chunk, text chunks (with a ``p`` padding key), and a last chunk
    carrying the last text piece (and ``tool_calls``), ``finish_reason`` and ``usage``."""
    head = {"id": uuid.uuid4().hex, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    middle, last = text_pieces[:-1], (text_pieces[-1] if text_pieces else "")
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}, p="abcdefgh"[: len(piece) + 1]) for piece in middle]
    final: dict = {"tool_calls": tool_calls} if tool_calls and not last else {"content": last}
    if tool_calls and last:
        final["tool_calls"] = tool_calls
    events.append(chunk(final, finish_reason, usage=_usage(usage, max(1, len(text_pieces)))))
    return events


def chat_completion(
    content: Any,
    model: str = "mistral-large-2512",
    finish_reason: str = "stop",
    usage: dict | None = None,
    *,
    tool_calls: list[dict] | None = None,
) -> dict:
    """A non-streamed chat completion body."""
    usage = _usage(usage, max(1, count_tokens(content) if isinstance(content, str) else 1))
    return {
        "id": uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "tool_calls": tool_calls},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 0}},
    }


# --- models --------------------------------------------------------------------------------------

_CAPABILITIES = (
    "completion_chat", "completion_fim", "function_calling", "fine_tuning", "vision", "ocr",
    "classification", "moderation", "audio", "audio_transcription", "reasoning",
)  # fmt: skip


def model_card(
    id: str,
    *caps: str,
    aliases: tuple[str, ...] = (),
    max_context_length: int = 262144,
    deprecation: str | None = None,
    replacement: str | None = None,
    temperature: float | None = 0.3,
    description: str = "",
    **extra: Any,
) -> dict:
    """A /v1/models card in the real shape; ``caps`` are the capabilities that are true."""
    return {
        "id": id, "object": "model", "created": 1767225600, "owned_by": "mistralai",
        "name": id, "description": description or f"Fake card for {id}",
        "max_context_length": max_context_length, "aliases": list(aliases),
        "deprecation": deprecation, "deprecation_replacement_model": replacement,
        "default_model_temperature": temperature, "type": "base",
        "capabilities": {c: c in caps for c in _CAPABILITIES},
        **extra,
    }  # fmt: skip


DEFAULT_MODELS: list[dict] = [
    model_card("mistral-large-2512", "completion_chat", "function_calling", "vision",
               aliases=("mistral-large-latest",), temperature=0.7),
    model_card("mistral-large-latest", "completion_chat", "function_calling", "vision",
               aliases=("mistral-large-2512",), temperature=0.7),
    model_card("pixtral-large-2411", "completion_chat", "function_calling", "vision",
               aliases=("pixtral-large-latest",), max_context_length=131072, temperature=0.7,
               deprecation="2026-12-31T12:00:00Z", replacement="mistral-large-2512"),
    model_card("ft:open-mistral-7b:abc123:20240101:xyz", "completion_chat", "function_calling", "fine_tuning",
               max_context_length=32768, temperature=None, type="fine-tuned", owned_by="abc123",
               job="0d5a8b3e-2f4c-4e7b-9a1d-6c3f5e8b2a10", root="open-mistral-7b", archived=False),
    model_card("mistral-new-2611", "completion_chat", "function_calling", description="A model no catalog knows yet"),
    model_card("codestral-2508", "completion_chat", "completion_fim", "function_calling",
               aliases=("codestral-latest",), max_context_length=131072),
    model_card("mistral-embed", max_context_length=8192, temperature=None),
]  # fmt: skip


# --- the server ----------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """Text of a message content: a string, or the text chunks of a list joined."""
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
    return content if isinstance(content, str) else ""


def _dated(model: str) -> str:
    return model[: -len("latest")] + "2512" if model.endswith("-latest") else model


@functools.lru_cache(maxsize=4096)
def _vector(text: str, dims: int) -> tuple[float, ...]:
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    v = [rng.random() - 0.5 for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return tuple(round(x / norm, 6) for x in v)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeMistral

    def server_bind(self) -> None:  # skips HTTPServer's socket.getfqdn(), a reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that went away (or stop()) is no error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle/delayed-ACK stalls
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        super().finish()

    def _any(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        merged = {k.lower(): (k, v) for k, v in headers.items()}  # later names win, case-insensitively
        for name, value in merged.values():
            self.send_header(name, value)
        self.end_headers()

    def reset(self) -> None:
        """Close with SO_LINGER 0: the peer gets a TCP RST."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference so close() really closes the descriptor
        self.connection.close()

    def send_reply(self, reply: Reply) -> None:
        if isinstance(reply, ResetReply):
            return self.reset()
        if isinstance(reply, FileReply):
            path = Path(reply.path)
            ctype = reply.content_type or (SSE_TYPE if path.suffix == ".sse" else "application/json")
            reply = RawReply(200, path.read_bytes(), {"Content-Type": ctype})
        if isinstance(reply, JSONReply):
            body = json.dumps(reply.body).encode()
            reply = RawReply(reply.status, body, {"Content-Type": "application/json", **reply.headers})
        if isinstance(reply, RawReply):
            self._head(reply.status, {"Content-Length": str(len(reply.body)), **reply.headers})
            self.wfile.write(reply.body)
            return
        cut = reply.cut_after is not None or reply.reset
        framing = {"Connection": "close"} if cut else {"Transfer-Encoding": "chunked"}
        self._head(reply.status, {"Content-Type": SSE_TYPE, "Cache-Control": "no-cache", **framing, **reply.headers})
        events = [e if isinstance(e, str) else json.dumps(e) for e in reply.events] + ["[DONE]"] * reply.done
        for data in events[: reply.cut_after]:
            if reply.event_delay:
                time.sleep(reply.event_delay)
            chunk = f"data: {data}\n\n".encode()
            self.wfile.write(chunk if cut else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if reply.reset:
            self.reset()
        elif not cut:
            self.wfile.write(b"0\r\n\r\n")


class FakeMistral:
    """Threaded HTTP server on 127.0.0.1 (port 0 → free port), run in a daemon thread."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        port: int = 0,
        host: str = "127.0.0.1",
        max_inputs: int = 512,
        max_tokens_per_request: int = 16384,
        max_tokens_per_input: int = 8192,
        min_interval: float = 0.0,
    ) -> None:
        self.latency = latency
        # A rate limit: a request arriving less than min_interval s after the last one let through gets a 429
        # with Retry-After (the time left); scripted replies are not limited. rate_limited counts the 429s.
        self.min_interval = min_interval
        self.rate_limited = 0
        self._last_allowed = float("-inf")
        self.host, self.port = host, port
        self.max_inputs = max_inputs
        self.max_tokens_per_request = max_tokens_per_request
        self.max_tokens_per_input = max_tokens_per_input
        self.models: list[dict] = copy.deepcopy(DEFAULT_MODELS)
        self.requests: list[Recorded] = []
        self.max_concurrency_seen = 0
        self.embedding_requests = 0
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._active = 0
        self._tool_calls = 0
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeMistral is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeMistral:
        self._httpd = _Server((self.host, self.port), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-mistral", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # end idle keep-alive connections and streams in progress
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread:
            self._thread.join(timeout=2)

    def __enter__(self) -> FakeMistral:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # scripting

    def queue(self, *replies: Reply) -> None:
        """Scripted replies, consumed FIFO by the next requests (any path) before the default behaviour."""
        with self._lock:
            self._queue.extend(replies)

    def count_tokens(self, text: str) -> int:
        """Token count used for embeddings limits and usage; assign another callable to change it."""
        return count_tokens(text)

    # request handling

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _serve(self, h: _Handler) -> None:
        raw = h.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = Recorded(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, body, raw)
        with self._lock:
            self.requests.append(rec)
            reply = self._queue.popleft() if self._queue else None
            if reply is None and self.min_interval:
                now = time.monotonic()
                if (wait := self._last_allowed + self.min_interval - now) > 0:
                    self.rate_limited += 1
                    reply = error_reply(429, "Requests rate limit exceeded", retry_after=round(wait, 3) or 0.001)
                else:
                    self._last_allowed = now
            self.embedding_requests += rec.path.split("?")[0].rstrip("/").endswith("/embeddings")
            self._active += 1
            self.max_concurrency_seen = max(self.max_concurrency_seen, self._active)
        try:
            if self.latency:
                time.sleep(self.latency)
            if reply is None:
                try:
                    reply = self.default_reply(rec)
                except Exception as e:  # a bug in the fake must not hang the client
                    reply = error_reply(500, f"fake server error: {e!r}", type="internal_error")
            h.send_reply(reply)
        except OSError:  # the client went away
            h.close_connection = True
        finally:
            with self._lock:
                self._active -= 1

    def default_reply(self, rec: Recorded) -> Reply:
        routes: dict[tuple[str, str], Callable[[dict], Reply]] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/fim/completions"): self._fim,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): lambda _: JSONReply({"object": "list", "data": self.models}),
        }
        route = routes.get((rec.method, rec.path.split("?")[0].rstrip("/")))
        if route is None:
            return JSONReply({"detail": "Not Found"}, 404)
        auth = rec.headers.get("authorization", "")
        if (auth[7:].strip() if auth.startswith("Bearer ") else "") in ("", "bad-key"):
            return JSONReply({"message": "Unauthorized", "request_id": uuid.uuid4().hex}, 401)
        if rec.method == "POST" and not isinstance(rec.body, dict):
            return error_reply(400, "Invalid JSON body")
        return route(rec.body or {})

    def _retired(self, model: str) -> Reply | None:
        if model in RETIRED:
            return error_reply(404, f"Invalid model: {model}", type="invalid_model", code="1500")
        return None

    def _completion(self, req: dict, text: str, prompt_tokens: int, tool_calls: list[dict] | None = None) -> Reply:
        model, finish = _dated(str(req.get("model", ""))), "tool_calls" if tool_calls else "stop"
        out = max(1, self.count_tokens(text))
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + out, "completion_tokens": out}
        if req.get("stream"):
            pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
            return SSEReply(chat_stream_events(pieces, model, finish, usage, tool_calls=tool_calls))
        if tool_calls:
            tool_calls = [{"id": c["id"], "type": "function", **c} for c in tool_calls]
        return JSONReply(chat_completion(text, model, finish, usage, tool_calls=tool_calls))

    def _chat(self, req: dict) -> Reply:
        model = str(req.get("model", ""))
        if error := self._retired(model):
            return error
        messages = [m for m in req.get("messages") or [] if isinstance(m, dict)]
        if not messages:
            return error_reply(400, "Conversation must have at least one message")
        prompt_tokens = sum(4 + self.count_tokens(_text(m.get("content"))) for m in messages)
        last, tools = messages[-1], req.get("tools") or []
        if last.get("role") == "tool":
            return self._completion(req, "tool said: " + _text(last.get("content")), prompt_tokens)
        user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        if tools and last.get("role") == "user" and re.search(r"\btool", user, re.IGNORECASE):
            with self._lock:
                self._tool_calls += 1
                digest = hashlib.sha256(f"call-{self._tool_calls}".encode()).digest()
            call_id = "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:9])
            name = tools[0].get("function", {}).get("name", "")
            call = {"id": call_id, "function": {"name": name, "arguments": "{}"}, "index": 0}
            return self._completion(req, "", prompt_tokens, tool_calls=[call])
        return self._completion(req, "echo: " + user, prompt_tokens)

    def _fim(self, req: dict) -> Reply:
        if error := self._retired(str(req.get("model", ""))):
            return error
        prompt, suffix = str(req.get("prompt") or ""), str(req.get("suffix") or "")
        return self._completion(req, f"MIDDLE({len(prompt)},{len(suffix)})", self.count_tokens(prompt + suffix))

    def _embeddings(self, req: dict) -> Reply:
        model, inputs = str(req.get("model", "")), req.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            return error_reply(400, "input must be a string or a non-empty list of strings")
        if len(inputs) > self.max_inputs:
            return error_reply(400, "Too many inputs in request, split into more batches.")
        counts = [self.count_tokens(t) for t in inputs]
        for i, (text, n) in enumerate(zip(inputs, counts)):
            if not text.strip():
                return error_reply(400, f"Input id {i} is empty.")
            if n > (limit := self.max_tokens_per_input):
                return error_reply(400, f"Input id {i} has {n} tokens, exceeding max {limit} tokens.")
        if (total := sum(counts)) > (limit := self.max_tokens_per_request):
            return error_reply(400, f"Too many tokens in batch. Max is {limit} got {total}")
        dims = 1024
        if model.startswith("codestral-embed"):
            dims = req.get("output_dimension") or 1536
            if not isinstance(dims, int) or not 1 <= dims <= 3072:
                return error_reply(400, "output_dimension must be an integer between 1 and 3072")
        data = [{"object": "embedding", "embedding": list(_vector(t, dims)), "index": i} for i, t in enumerate(inputs)]
        usage = {"prompt_tokens": total, "total_tokens": total}
        return JSONReply({"id": uuid.uuid4().hex, "object": "list", "data": data, "model": model, "usage": usage})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept before answering each request")
    parser.add_argument("--min-interval", type=float, default=0.0, help="429 to requests closer than this (s)")
    args = parser.parse_args()
    with FakeMistral(latency=args.latency, port=args.port, host=args.host, min_interval=args.min_interval) as fake:
        print(f"fake Mistral API on {fake.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
