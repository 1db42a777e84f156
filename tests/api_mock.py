"""Helpers of the API unit tests (pytest-httpx answers every request): SSE bodies, chunks, prompts, catalog facts."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Iterator

import httpx
import llm
import llm.cli
from conftest import validate_form, validate_request
from fake_mistral import Upload, parse_form
from llm.parts import (
    AttachmentPart,
    Message,
    TextPart,
)

import llm_mistral_suite as suite
from _llm_mistral_suite.catalog import (
    BUILTIN_CATALOG,
)

API = "https://api.mistral.ai/v1"  # the default base_url; pytest-httpx answers every request, none leaves the machine


CHAT_URL = f"{API}/chat/completions"


WIRE_ID = re.compile(r"[A-Za-z0-9]{9}")


SSE_HEADERS = {"Content-Type": "text/event-stream"}


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

ALIASES = {
    "mistral-large": "mistral-large-latest",
    "mistral-medium": "mistral-medium-latest",
    "mistral-small": "mistral-small-latest",
    "codestral": "codestral-latest",
    "ministral-3b": "ministral-3b-latest",
    "ministral-8b": "ministral-8b-latest",
    "ministral-14b": "ministral-14b-latest",
    "magistral-medium": "magistral-medium-latest",
    "magistral-small": "magistral-small-latest",
    "devstral": "devstral-medium-latest",
    "pixtral-large": "pixtral-large-latest",
    "voxtral-small": "voxtral-small-latest",
    "mistral-nemo": "open-mistral-nemo",
}


CHAT_ENTRIES = [e for e in BUILTIN_CATALOG if "chat" in e.capabilities]


RETIRED = ["open-mistral-7b", "open-mixtral-8x7b", "open-mixtral-8x22b", "open-codestral-mamba", "mathstral-7b"]


# --- helpers ---------------------------------------------------------------------------------------


def sse(*events: Any, done: bool = True) -> bytes:
    """An SSE body: dict events as JSON, str events as raw data payloads, ``(name, dict)`` pairs as named events
    (``event: name``, as the audio endpoints send them)."""
    blocks = [f"event: {e[0]}\ndata: {json.dumps(e[1])}" if isinstance(e, tuple)
              else f"data: {e if isinstance(e, str) else json.dumps(e)}" for e in events] + ["data: [DONE]"] * done
    return "".join(f"{block}\n\n" for block in blocks).encode()


class CutBody(httpx.SyncByteStream):
    """A response body that sends ``head``, then loses the connection."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        raise httpx.ReadError("Connection reset by peer")


def sent_form(request: httpx.Request) -> tuple[dict[str, list[str]], dict[str, Upload]]:
    """A form request's text fields under the names sent (``x[]`` kept) and its file parts, once checked against
    the spec's schema for its path."""
    form, files = parse_form(request.content, request.headers["content-type"])
    validate_form(request.url.path, form, files)
    return form, files


def chunk(delta: dict, finish_reason: str | None = None, **extra: Any) -> dict:
    return {"id": "r1", "object": "chat.completion.chunk", "model": "mistral-large-2512",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


def sent(mock) -> list[dict]:
    """Bodies of the chat requests made so far."""
    return [json.loads(r.content) for r in mock.get_requests() if r.url.path.endswith("/chat/completions")]


def build(model_name: str, messages: list[Message], *, tools=(), schema=None, **options) -> dict:
    """The request body the model builds for ``messages`` (no HTTP)."""
    model = llm.get_model(model_name)
    prompt = llm.Prompt(None, model, messages=messages, tools=list(tools), schema=schema,
                        options=model.Options(**options))
    body = model.request_body(prompt, stream=False)
    validate_request(body)
    return body


def user(text: str, *attachments: llm.Attachment) -> Message:
    return Message(role="user", parts=[TextPart(text=text), *(AttachmentPart(attachment=a) for a in attachments)])


def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


def weather(city: str) -> str:
    """Weather for a city."""
    return "sunny"


def registered_models() -> list[tuple[Any, Any, tuple]]:
    out: list[tuple[Any, Any, tuple]] = []
    suite.register_models(lambda model, async_model=None, aliases=(): out.append((model, async_model, tuple(aliases))))
    return out


INTERLEAVED_THINKING = [  # an empty signed block first, then thinking and text taking turns
    {"type": "thinking", "thinking": [], "signature": "sig-empty"},
    {"type": "thinking", "thinking": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
     "signature": "sig-1"},
    {"type": "text", "text": "ans"},
    {"type": "thinking", "thinking": [{"type": "text", "text": "C"}], "signature": "sig-2"},
    {"type": "text", "text": "more"},
]


SIGNED_DELTAS = [  # two signed thinking blocks streamed in fragments, then the answer; `closed` rides on ordinary fragments
    {"role": "assistant", "content": ""},
    {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "First, "}], "closed": True}]},
    {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "multiply."}], "closed": True,
                  "signature": "sig-one"}]},
    {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Then "}]}]},
    {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "check."}], "signature": "sig-two",
                  "closed": True}, {"type": "text", "text": "3"}]},
    {"content": "23"},
]
