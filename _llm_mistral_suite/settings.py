"""Every setting: the environment variables and their defaults, the servers' endpoints, and the API key lookup."""

from __future__ import annotations

import os
from typing import NamedTuple

import llm

from .errors import MissingKeyError, MistralSuiteError, key_preview

MISTRAL_BASE_URL = "https://api.mistral.ai/v1"
LLAMAFILE_BASE_URL = "http://127.0.0.1:8080/v1"
HF_BASE_URL = "https://huggingface.co"
HF_BASE_URL_ENV = "LLM_MISTRAL_HF_BASE_URL"  # a mirror of Hugging Face (tests point it at a fake)


def env_float(name: str, default: float) -> float:
    """A number from the environment; ``default`` when unset or not a number."""
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def timeout_seconds() -> float:
    """``LLM_MISTRAL_TIMEOUT``: how long to wait for a server to answer (connecting: at most 10 s)."""
    return env_float("LLM_MISTRAL_TIMEOUT", 300.0)


def connect_timeout() -> float:
    """How long to wait for a connection: at most 10 s, less when LLM_MISTRAL_TIMEOUT is shorter."""
    return min(10.0, timeout_seconds())


def max_attempts() -> int:
    """``LLM_MISTRAL_MAX_ATTEMPTS``: attempts per request for failures worth retrying."""
    return max(1, int(env_float("LLM_MISTRAL_MAX_ATTEMPTS", 5)))


def backoff_base() -> float:
    """``LLM_MISTRAL_BACKOFF``: the base, in seconds, of the exponential backoff with jitter."""
    return env_float("LLM_MISTRAL_BACKOFF", 1.0)


def embed_concurrency() -> int:
    """``LLM_MISTRAL_EMBED_CONCURRENCY``: embedding requests in flight at once."""
    return max(1, int(env_float("LLM_MISTRAL_EMBED_CONCURRENCY", 4)))


def inline_limit_bytes() -> int:
    """``LLM_MISTRAL_INLINE_LIMIT_MB``: documents up to this size go inside the request as data; larger ones are
    uploaded to /v1/files first (and deleted afterwards)."""
    return max(0, int(env_float("LLM_MISTRAL_INLINE_LIMIT_MB", 10.0) * 1024 * 1024))
def batch_poll_seconds() -> float:
    """``LLM_MISTRAL_BATCH_POLL``: the first wait between two looks at a batch job (it grows to a minute)."""
    return max(0.0, env_float("LLM_MISTRAL_BATCH_POLL", 2.0))


def llamafile_base_url() -> str:
    """``LLM_LLAMAFILE_BASE_URL``: where ``llm -m llamafile`` looks."""
    return os.environ.get("LLM_LLAMAFILE_BASE_URL") or LLAMAFILE_BASE_URL


def hf_base_url() -> str:
    """Where GGUF downloads come from: Hugging Face, or ``LLM_MISTRAL_HF_BASE_URL``."""
    return (os.environ.get(HF_BASE_URL_ENV) or HF_BASE_URL).rstrip("/")


def shown_url(url: str) -> str:
    """``url`` as it may be printed: a password in it (``http://user:pass@host``) is masked, even in a URL that does
    not parse (a hand-edited servers file, a mistyped LLM_MISTRAL_BASE_URL), by urlsplit's own rule: the host part
    runs from ``//`` to the first ``/``, ``?`` or ``#``, and its credentials end at its last ``@``."""
    scheme, separator, rest = url.partition("//")
    end = min((index for index in map(rest.find, "/?#") if index >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not separator or not at or ":" not in userinfo:
        return url
    return f"{scheme}//{userinfo.partition(':')[0]}:***@{host}{rest[end:]}"


class Endpoint(NamedTuple):
    """A server the plugin talks to, and how to explain its failures to the user."""

    base_url: str
    label: str
    key_hint: str = ""
    start_hint: str = ""
    retry_refused: bool = True  # False for local servers: "connection refused" means "not started"

    @property
    def shown_url(self) -> str:
        return shown_url(self.base_url)

    def headers(self, key: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers


def mistral_endpoint() -> Endpoint:
    """Mistral's API, at ``LLM_MISTRAL_BASE_URL`` if set."""
    return Endpoint(
        base_url=(os.environ.get("LLM_MISTRAL_BASE_URL") or MISTRAL_BASE_URL).rstrip("/"),
        label="Mistral's API",
        key_hint="Set a valid key with `llm keys set mistral` or the LLM_MISTRAL_KEY environment variable "
        "(keys: https://console.mistral.ai/api-keys).",
        start_hint="Check your network connection, or LLM_MISTRAL_BASE_URL if you set it.",
    )


def mistral_key(explicit: str | None, assigned: str | None = None) -> str:
    """The Mistral API key: ``model.key = ...`` (``assigned``, which wins in llm too), then ``--key``,
    ``llm keys set mistral``, LLM_MISTRAL_KEY, MISTRAL_API_KEY."""
    for key, source, fix in (
        (assigned, "model.key", "Check the value given to model.key."),
        (llm.get_key(explicit_key=explicit) if explicit else None, "--key", "Check the --key value."),
        (llm.get_key(key_alias="mistral"), "`llm keys set mistral`", "Set it again with `llm keys set mistral`."),
        (os.environ.get("LLM_MISTRAL_KEY"), "LLM_MISTRAL_KEY", "Set LLM_MISTRAL_KEY again."),
        (os.environ.get("MISTRAL_API_KEY"), "MISTRAL_API_KEY", "Set MISTRAL_API_KEY again."),
    ):
        usable = usable_key(key, source, fix)
        if usable:
            return usable
    raise MissingKeyError(
        "No Mistral API key found. Set one with `llm keys set mistral`, or the LLM_MISTRAL_KEY "
        "(or MISTRAL_API_KEY) environment variable. Keys: https://console.mistral.ai/api-keys"
    )


def usable_key(key: str | None, source: str, fix: str) -> str | None:
    """``key`` without the whitespace a paste leaves around it (None if nothing is left); an error, showing at
    most its first 4 characters, if it holds a character an HTTP header cannot carry."""
    key = (key or "").strip()
    if not key:
        return None
    for position, char in enumerate(key, 1):
        if not "!" <= char <= "~":  # visible ASCII: what a Bearer token is made of
            what = "a space" if char == " " else repr(char) if char.isascii() else "a non-ASCII character"
            raise MistralSuiteError(
                f"The API key from {source} cannot be sent: it has {what} at position {position}, which an HTTP "
                f"header cannot carry (a copy-and-paste slip?). It starts {key_preview(key)}. {fix}"
            )
    return key
