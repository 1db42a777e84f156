"""Translation for every route: llm's ``prompt.messages`` to OpenAI-style messages, and reply chunks back to events.

Mistral's API, llamafile and other servers, and llama-cpp-python all speak this shape; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional, Union

import llm
from llm.parts import StreamEvent

from .catalog import AUDIO_TYPES, DOCUMENT_TYPES
from .errors import MistralSuiteError, StreamCutError

if TYPE_CHECKING:
    from .limits import AttachmentLimits

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
    """An image (URL or data URI), audio, or document (URL or data URI) content chunk for an attachment."""
    mime = attachment.resolve_type()
    if mime in AUDIO_TYPES:
        return {"type": "input_audio", "input_audio": attachment.base64_content()}
    if mime in DOCUMENT_TYPES:
        chunk = {"type": "document_url",
                 "document_url": attachment.url or f"data:{mime};base64,{attachment.base64_content()}"}
        if attachment.path:
            chunk["document_name"] = PurePath(attachment.path).name
        return chunk
    url = attachment.url or f"data:{mime};base64,{attachment.base64_content()}"
    return {"type": "image_url", "image_url": {"url": url}}


def chat_messages(
    prompt: llm.Prompt, *, thinking: bool, limits: "AttachmentLimits | None" = None,
    replaced: Optional[Mapping[int, llm.Attachment]] = None,
) -> list[dict[str, Any]]:
    """OpenAI-style messages for the whole conversation in ``prompt.messages``.

    ``thinking`` keeps reasoning parts as Mistral ``thinking`` chunks on assistant turns (reasoning
    models need their thinking back); servers that do not take them get the answer text only.
    ``limits``: the service's attachment limits, checked before any attachment is read. ``replaced`` maps
    ``id(attachment)`` to the attachment to send instead (an uploaded document's URL). A prompt with nothing to
    answer (empty, or only whitespace, and no attachment) is an error, not an empty request.
    """
    from llm.parts import (
        AttachmentPart,
        ReasoningPart,
        TextPart,
        ToolCallPart,
        ToolResultPart,
    )

    conversation = prompt.messages
    attachments = [part.attachment for message in conversation for part in message.parts
                   if isinstance(part, AttachmentPart) and part.attachment is not None]
    if limits is not None and attachments:
        from .limits import check_attachments

        check_attachments(attachments, limits)
    messages: list[dict[str, Any]] = []
    for message in conversation:
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
                chunks.append(attachment_chunk((replaced or {}).get(id(part.attachment), part.attachment)))
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
    last = messages[-1] if messages else {"role": "system"}
    if last["role"] in ("system", "assistant") or (last["role"] == "user" and not _has_content(last["content"])):
        raise MistralSuiteError(
            "The prompt is empty: there is nothing to answer. Give a prompt (or an attachment), "
            "as an argument or on standard input."
        )
    return messages


def _has_content(content: Any) -> bool:
    return bool(content.strip()) if isinstance(content, str) else bool(content)


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
    """The prompt's tools as OpenAI-style function definitions."""
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

    __slots__ = ("label", "finish_reason", "usage", "model", "reply_id", "tool_calls", "text_length")

    def __init__(self, label: str) -> None:
        self.label = label  # who sent the reply, for error messages
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
                f"The reply from {self.label} ended before it was finished (no finish_reason: the "
                f"connection was cut after {self.text_length} characters). The text is incomplete; try again."
            )
        if self.finish_reason == "error":
            raise MistralSuiteError(f"{self.label} stopped the reply with an error.")
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

