"""Chat models of Mistral's API (``mistral/<api-name>``): the request body from a prompt and its options."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import llm

from .catalog import (
    AUDIO_TYPES,
    DOCUMENT_TYPES,
    IMAGE_TYPES,
    RETIRED,
    CatalogEntry,
)
from .errors import MistralSuiteError
from .options import PASS_THROUGH_OPTIONS, PROMPT_CACHE_OFF, OptionsFor
from .replies import AsyncReplyModel, ReplyModel, ReplyRequest, arun_reply, run_reply
from .routes import missing_model_error, retired_message
from .settings import mistral_endpoint, mistral_key
from .wire import chat_messages, json_schema_format, tool_definitions

if TYPE_CHECKING:
    from .documents import DocumentUploads


class _MistralChatBase:
    """What the sync and async Mistral chat models share: identity, key lookup and the request."""

    needs_key = "mistral"
    key_env_var = "LLM_MISTRAL_KEY"
    can_stream = True
    supports_schema = True
    Options = OptionsFor("MistralOptions")

    def __init__(self, entry: CatalogEntry) -> None:
        self.entry = entry
        self.model_id = entry.model_id
        self.options_name = "MistralReasoningOptions" if "reasoning" in entry.capabilities else "MistralOptions"
        self.supports_tools = "tools" in entry.capabilities
        self.attachment_types = (IMAGE_TYPES if "vision" in entry.capabilities else frozenset()) | (
            AUDIO_TYPES if "audio" in entry.capabilities else frozenset()
        ) | (DOCUMENT_TYPES if "documents" in entry.capabilities else frozenset())

    def get_key(self, explicit_key: str | None = None) -> str:
        # llm asks for the key before execute(): say "retired" before "no key" for a retired model.
        if self.entry.status == RETIRED:
            raise MistralSuiteError(retired_message(self.entry))
        return mistral_key(explicit_key, self.key)

    def request_body(
        self, prompt: llm.Prompt, stream: bool, uploads: "DocumentUploads | None" = None,
        conversation_id: str | None = None,
    ) -> dict[str, Any]:
        """The request for ``prompt``; ``conversation_id`` is the default ``prompt_cache_key``."""
        entry, options = self.entry, prompt.options
        from .limits import MISTRAL_ATTACHMENT_LIMITS  # here, not at start-up: only a prompt needs it

        messages = chat_messages(prompt, thinking=True, limits=MISTRAL_ATTACHMENT_LIMITS,
                                 replaced=uploads.replaced if uploads else None)
        if options.prefix is not None:
            messages.append({"role": "assistant", "content": options.prefix, "prefix": True})
        body: dict[str, Any] = {"model": entry.api_name, "messages": messages}
        if stream:
            body["stream"] = True
        for name in PASS_THROUGH_OPTIONS:
            value = getattr(options, name, None)  # reasoning_effort exists on reasoning models only
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
        cache_key = options.prompt_cache_key if options.prompt_cache_key is not None else conversation_id
        if cache_key and cache_key != PROMPT_CACHE_OFF:
            body["prompt_cache_key"] = cache_key
        return body

    def reply_request(
        self, prompt: llm.Prompt, stream: bool, key: str | None, uploads: "DocumentUploads | None" = None,
        conversation: Any = None,
    ) -> ReplyRequest:
        body = self.request_body(prompt, stream, uploads, getattr(conversation, "id", None))
        return ReplyRequest(
            mistral_endpoint(), "/chat/completions", key, body, self.entry.api_name,
            explain=lambda error: missing_model_error(self.entry, error),
        )


def tool_choice(choice: str, tools: list[dict[str, Any]]) -> Any:
    """The API's ``tool_choice`` for ``-o tool_choice``: a keyword, or the named tool."""
    if choice in ("auto", "none", "any", "required"):
        return choice
    names = [tool["function"]["name"] for tool in tools]
    if choice not in names:
        listed = ", ".join(names) or "none were given"
        raise MistralSuiteError(f"tool_choice {choice!r} is not auto, none, any, required or a tool's name ({listed}).")
    return {"type": "function", "function": {"name": choice}}


class MistralChat(_MistralChatBase, ReplyModel, llm.KeyModel):
    """A chat model of Mistral's API."""

    def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[no-untyped-def]
        from .documents import delete_uploads, upload_large_documents

        uploads = upload_large_documents(prompt, key)  # PDFs too large to send inline, for this request only
        try:
            yield from run_reply(self.reply_request(prompt, stream, key, uploads, conversation), stream, response)
        finally:
            delete_uploads(key, uploads)


class AsyncMistralChat(_MistralChatBase, AsyncReplyModel, llm.AsyncKeyModel):
    """Async twin of ``MistralChat``."""

    async def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[no-untyped-def]
        import asyncio

        from .documents import delete_uploads, upload_large_documents

        uploads = await asyncio.to_thread(upload_large_documents, prompt, key)
        try:
            request = self.reply_request(prompt, stream, key, uploads, conversation)
            async for event in arun_reply(request, stream, response):
                yield event
        finally:
            await asyncio.to_thread(delete_uploads, key, uploads)
