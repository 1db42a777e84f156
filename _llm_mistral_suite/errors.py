"""The errors a user sees, and how a service's error body and the API key become (or stay out of) their text."""

from __future__ import annotations

import json
import re
from typing import Any

import click
import llm


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


def redact(text: str, key: str | None) -> str:
    """``text`` with every occurrence of ``key`` replaced by ``[key]``."""
    return text.replace(key, "[key]") if key else text


def _json_unescaped(text: str) -> str:
    """``text`` with the JSON escapes that can spell a key (``\\u0073``, ``\\/``, ``\\"``, ``\\\\``) decoded, in JSON
    or in a broken fragment of it; an escaped lone surrogate stays as it is (it cannot be printed)."""

    def decoded(match: re.Match[str]) -> str:
        if match[2]:
            return match[2]
        char = chr(int(match[1], 16))
        return match[0] if "\ud800" <= char <= "\udfff" else char

    return re.sub(r'\\(?:u([0-9a-fA-F]{4})|(["\\/]))', decoded, text)


def shown_text(text: str, key: str | None, limit: int) -> str:
    """Text a service sent, as an error may quote it: its JSON escapes decoded (a key echoed as ``\\u0073k-...``
    is the key again once decoded), then ``key`` redacted, then cut to ``limit`` characters (half a key is still
    a secret)."""
    return redact(_json_unescaped(redact(text, key)), key)[:limit]


def key_preview(key: str) -> str:
    """How a key may be shown to its owner: at most its first 4 characters."""
    return repr(key[:4] + "...") if len(key) > 4 else "(too short to show)"


def service_message(body: bytes, key: str | None = None) -> str:
    """The human part of an error body, whatever its shape (bodies vary between services and statuses), with
    ``key`` redacted after JSON decoding (a key echoed as ``\\u0073k-...`` is the key again once decoded) and
    before truncating (half a key is still a secret)."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return shown_text(body.decode("utf-8", "replace").strip(), key, 500)
    for _ in range(3):  # {"message": {"detail": [...]}}, {"error": {"message": ...}}, ...
        if isinstance(data, dict):
            data = data.get("message") or data.get("detail") or data.get("error") or data.get("msg") or ""
        elif isinstance(data, str) and data.startswith(("{", "[")):
            try:
                data = json.loads(data)
            except ValueError:
                break
    if isinstance(data, list):
        return redact("; ".join(
            ".".join(str(p) for p in (item.get("loc") if isinstance(item.get("loc"), list) else [])[1:])
            + f": {item.get('msg', '')}"
            if isinstance(item, dict)
            else str(item)
            for item in data
        ), key)
    return shown_text(str(data), key, 500)


def not_utf8(text: str) -> str:
    """What is wrong with ``text`` if it cannot be sent as UTF-8 ("" if nothing): Python reads bytes that are
    not UTF-8 (on standard input, in a C locale) as lone surrogates, which no JSON body can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        byte = f"byte 0x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"character {char!r}"
        before = text[max(0, exc.start - 20):exc.start].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        where = f" after {before!r}" if before.strip() else " at its start" if not exc.start else ""
        return (
            f"is not valid UTF-8 text: it has {byte}{where}. Convert it to UTF-8 first "
            "(for example: iconv -f latin1 -t utf-8)."
        )
    return ""
