"""The errors a user sees, and how a service's error body and the API key become (or stay out of) their text."""

from __future__ import annotations

import json
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
