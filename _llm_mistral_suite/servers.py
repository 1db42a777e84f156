"""llamafile and any other OpenAI-compatible server (llama.cpp's server, Ollama, vLLM) as llm models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import llm

from .embeddings import MistralEmbedding
from .errors import MissingKeyError, MistralSuiteError
from .options import OptionsFor
from .replies import AsyncReplyModel, ReplyModel, ReplyRequest
from .settings import LLAMAFILE_BASE_URL, Endpoint, llamafile_base_url, shown_url, usable_key
from .storage import (
    OPTIONAL_FLAG,
    OPTIONAL_NAMES,
    OPTIONAL_TEXT,
    TEXT,
    entry_problem,
    plain_name,
    read_json_object,
    skip_entry,
)
from .transport import arequest_json, request_json
from .wire import chat_messages, json_schema_format, tool_definitions

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
            f"It needs a key: `llm mistral servers add {add_name} {shown_url(self.url)} --key-name KEY` and "
            "`llm keys set KEY` (or pass --key).",
            start_hint=start,
            retry_refused=False,
        )

    def key(self, explicit: str | None, assigned: str | None = None) -> str | None:
        """The key for this server only: ``model.key = ...`` (``assigned``), ``--key`` (a key or an `llm keys`
        name), else its own `llm keys` entry; never an environment variable or another service's key."""
        key = usable_key(assigned, "model.key", "Check the value given to model.key.") or usable_key(
            llm.get_key(explicit_key=explicit) if explicit else None, "--key", "Check the --key value.")
        if key or not self.key_name:
            return key
        key = usable_key(llm.get_key(key_alias=self.key_name), f"`llm keys set {self.key_name}`",
                         f"Set it again with `llm keys set {self.key_name}`.")
        if not key:
            raise MissingKeyError(f"No key found for {self.name}: set one with `llm keys set {self.key_name}`.")
        return key


LLAMAFILE = ServerConfig(name="llamafile-server", url=LLAMAFILE_BASE_URL, aliases=("llamafile",))


def servers_path() -> Path:
    """The servers added with ``llm mistral servers add``."""
    return llm.user_dir() / "mistral-suite-servers.json"


SERVER_FIELDS = {  # the fields of an entry of the servers file, and what each may be
    "url": TEXT,
    "model": OPTIONAL_TEXT,
    "key_name": OPTIONAL_TEXT,
    "aliases": OPTIONAL_NAMES,
    "embedding": OPTIONAL_FLAG,
}


def server_url(url: str) -> str:
    """A server's base URL, checked and normalised (scheme in lower case, no trailing slash, ``/v1`` added to a
    bare host); ``ValueError`` saying what is wrong."""
    from urllib.parse import urlsplit, urlunsplit

    url = url.strip()
    if not url or any(char.isspace() or ord(char) < 32 for char in url):
        raise ValueError("a URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"it is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("give the server's base URL, such as http://127.0.0.1:8000/v1")
    if port == 0:
        raise ValueError("port 0 is not a port a server listens on")
    if parts.query or parts.fragment:
        raise ValueError("give the base URL without ?query or #fragment")
    path = parts.path.rstrip("/") or "/v1"  # OpenAI-compatible servers (llamafile, llama.cpp, vLLM) serve under /v1
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))


def _looks_like_a_base_url(url: str) -> bool:
    """A cheap check of a URL read from the file (``servers add`` wrote it through ``server_url``; the hooks read it
    on every `llm` command, so no URL parsing here: a port out of range still fails, clearly, when it is used)."""
    return url[:8].lower().startswith(("http://", "https://")) and len(url) > 8 and not any(
        char.isspace() or char < " " for char in url)


def load_servers() -> list[ServerConfig]:
    """The built-in llamafile plus the servers added with ``llm mistral servers add``; never raises: an entry
    that cannot be used is skipped with a warning naming the file and the entry."""
    llamafile = LLAMAFILE._replace(url=llamafile_base_url())
    path = servers_path()
    added = []
    for name, config in read_json_object(path).items():
        problem = entry_problem(config, SERVER_FIELDS)
        if not problem and not plain_name(name):
            problem = "is not a plain name (letters, digits, '.', '_' and '-')"
        if not problem and not _looks_like_a_base_url(config["url"]):
            problem = f'has a bad "url" ({config["url"][:60]!r}; `llm mistral servers add` checks one)'
        if problem:
            skip_entry(path, f"server {name!r}", problem)
            continue
        added.append(ServerConfig(name=name, url=config["url"], model=config.get("model"), key_name=config.get("key_name"),
                                  aliases=tuple(config.get("aliases") or ()), embedding=bool(config.get("embedding"))))
    return [llamafile] + [server for server in added if server.name != llamafile.name]


_discovered_models: dict[str, str] = {}  # server URL -> the model name its /models listed first


def _first_listed_model(server: ServerConfig, listing: Any) -> str:
    """The first model id of a ``GET /models`` answer (None: the server has no /models)."""
    try:
        return listing["data"][0]["id"]
    except (KeyError, IndexError, TypeError):
        name = "NAME" if server.name == LLAMAFILE.name else server.name
        raise MistralSuiteError(
            f"{server.endpoint().label} lists no model at {shown_url(server.url)}/models; name one with "
            f"`llm mistral servers add {name} {shown_url(server.url)} --model MODEL`."
        ) from None


def _raise_unless_no_models_endpoint(error: MistralSuiteError) -> None:
    """Re-raise ``error`` unless it says the server has no /models (then ask for --model instead)."""
    if error.status not in (404, 405):
        raise error


def server_model_name(server: ServerConfig, key: str | None) -> str:
    """The model name to send: configured, or the first one the server lists (asked once per process)."""
    if server.model:
        return server.model
    if server.url not in _discovered_models:
        try:
            listing = request_json(server.endpoint(), "GET", "/models", key)
        except MistralSuiteError as error:
            _raise_unless_no_models_endpoint(error)
            listing = None
        _discovered_models[server.url] = _first_listed_model(server, listing)
    return _discovered_models[server.url]


async def aserver_model_name(server: ServerConfig, key: str | None) -> str:
    """Async twin of ``server_model_name``."""
    if server.model:
        return server.model
    if server.url not in _discovered_models:
        try:
            listing = await arequest_json(server.endpoint(), "GET", "/models", key)
        except MistralSuiteError as error:
            _raise_unless_no_models_endpoint(error)
            listing = None
        _discovered_models[server.url] = _first_listed_model(server, listing)
    return _discovered_models[server.url]


def server_404_error(server: ServerConfig, error: MistralSuiteError) -> MistralSuiteError:
    """``error``, or for a 404 one that says what it means on a server: a wrong URL or model name."""
    if error.status != 404:
        return error
    detail = f": {error.detail}" if error.detail else ""
    return MistralSuiteError(
        f"{server.endpoint().label} answered 404 Not Found for {shown_url(server.url)}/chat/completions{detail}. "
        "Check its URL (usually ending in /v1) and model name: `llm mistral servers list`.",
        status=404, detail=error.detail,
    )


class _ServerChatBase:
    """What the sync and async server chat models share."""

    can_stream = True
    supports_schema = True
    supports_tools = True
    key_env_var = None
    Options = OptionsFor("ServerOptions")

    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        self.model_id = server.name
        self.needs_key = server.key_name

    def get_key(self, explicit_key: str | None = None) -> str | None:
        return self.server.key(explicit_key, self.key)

    def request_body(self, prompt: llm.Prompt, stream: bool, model: str, messages: list[dict[str, Any]]
                     ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages}
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

    def request_for_model(self, prompt: llm.Prompt, stream: bool, key: str | None, model: str,
                          messages: list[dict[str, Any]]) -> ReplyRequest:
        return ReplyRequest(
            self.server.endpoint(), "/chat/completions", key, self.request_body(prompt, stream, model, messages), model,
            explain=lambda error: server_404_error(self.server, error),
        )


class ServerChat(_ServerChatBase, ReplyModel, llm.KeyModel):
    """Chat with a model served by llamafile, llama.cpp's server, Ollama, vLLM or similar."""

    def reply_request(self, prompt: llm.Prompt, stream: bool, key: str | None, conversation: Any = None) -> ReplyRequest:
        messages = chat_messages(prompt, thinking=False)  # an empty prompt fails here, before any request
        return self.request_for_model(prompt, stream, key, server_model_name(self.server, key), messages)


class AsyncServerChat(_ServerChatBase, AsyncReplyModel, llm.AsyncKeyModel):
    """Async twin of ``ServerChat``: the model name is looked up without blocking the event loop."""

    async def areply_request(self, prompt: llm.Prompt, stream: bool, key: str | None, conversation: Any = None) -> ReplyRequest:
        messages = chat_messages(prompt, thinking=False)
        return self.request_for_model(prompt, stream, key, await aserver_model_name(self.server, key), messages)


class ServerEmbedding(MistralEmbedding):
    """The ``/embeddings`` endpoint of an OpenAI-compatible server."""

    max_inputs = 64
    max_tokens = 65536
    encoding_format = None  # JSON floats: what every OpenAI-compatible server answers

    def __init__(self, server: ServerConfig) -> None:
        super().__init__(server.name, server.model or "", None)
        self.server = server
        self.needs_key = server.key_name
        self.key_env_var = None

    def get_key(self, explicit_key: str | None = None) -> str | None:  # type: ignore[override]
        return self.server.key(explicit_key, self.key)

    def endpoint(self) -> Endpoint:
        return self.server.endpoint()

    def request_body(self, texts: list[str], key: str | None, base64: bool = False) -> dict[str, Any]:
        return {"model": server_model_name(self.server, key), "input": texts}
