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
from .transport import STREAM_DONE

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
        # A reply's text parts were printed one after the other; a user's (fragments, prompt) are paragraphs.
        joiner = "" if role == "assistant" else "\n"
        texts: list[str] = []
        ordered: list[dict[str, Any]] = []  # thinking and text as the reply gave them, text parts joined
        attachments_sent: list[dict[str, Any]] = []
        tool_calls: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                texts.append(part.text)
                if ordered and ordered[-1]["type"] == "text":
                    ordered[-1]["text"] += joiner + part.text
                else:
                    ordered.append({"type": "text", "text": part.text})
            elif isinstance(part, ReasoningPart) and thinking:
                block = thinking_chunk(part)
                if block is not None:
                    ordered.append(block)
            elif isinstance(part, ToolCallPart):
                tool_calls.append(
                    {"id": wire_tool_call_id(part.tool_call_id), "type": "function",
                     "function": {"name": part.name, "arguments": json.dumps(part.arguments)}}
                )
            elif isinstance(part, AttachmentPart) and part.attachment is not None:
                attachments_sent.append(attachment_chunk((replaced or {}).get(id(part.attachment), part.attachment)))
        content: Any = joiner.join(texts)
        if attachments_sent or any(chunk["type"] == "thinking" for chunk in ordered):
            # chunks: thinking where it came, the attachments after the text
            content = [chunk for chunk in ordered if chunk["type"] != "text" or chunk["text"]] + attachments_sent
        wire: dict[str, Any] = {"role": role, "content": content}
        if tool_calls:
            wire["tool_calls"] = tool_calls
        messages.append(wire)
    last = messages[-1] if messages else {"role": "system"}
    refuse_nothing_to_answer(last["role"], _has_content(last.get("content")))
    return messages


def refuse_nothing_to_answer(last_role: str, last_has_content: bool) -> None:
    """Raise when a conversation ends where no model can answer: in a system or assistant turn, or in an empty
    user turn (the service's 422, or a local model inventing a question)."""
    if last_role in ("system", "assistant") or (last_role == "user" and not last_has_content):
        raise MistralSuiteError(
            "The prompt is empty: there is nothing to answer. Give a prompt (or an attachment), "
            "as an argument or on standard input."
        )


def thinking_chunk(part: Any) -> dict[str, Any] | None:
    """The ``thinking`` chunk that sends a reasoning part back exactly as the service sent it, or None for a
    part not to send: redacted reasoning, and reasoning without text that did not come from Mistral.

    ``provider_metadata["mistral"]`` holds what the text alone does not say (see ``ThinkingBlock``): the
    ``signature``, the ``closed`` flag, and ``fragments``, the block's items as the service split them (the
    length of each text item, in order, and any other item as it was). llm-mistral 0.16 kept the raw chunk as
    ``content_chunk``; its logged conversations are sent back from that.
    """
    if part.redacted:
        return None
    meta = (part.provider_metadata or {}).get("mistral")
    if not isinstance(meta, dict):
        return {"type": "thinking", "thinking": [{"type": "text", "text": part.text}]} if part.text else None
    items = _fragments(part.text, meta.get("fragments"))
    legacy = meta.get("content_chunk")
    if items is None and isinstance(legacy, dict) and isinstance(legacy.get("thinking"), list):
        texts = [i.get("text", "") for i in legacy["thinking"] if isinstance(i, dict) and i.get("type") == "text"]
        if "".join(texts) == part.text:
            items = [dict(item) for item in legacy["thinking"] if isinstance(item, dict)]
    if items is None:
        items = [{"type": "text", "text": part.text}] if part.text else []
    block: dict[str, Any] = {"type": "thinking", "thinking": items}
    if isinstance(meta.get("signature"), str):
        block["signature"] = meta["signature"]
    if isinstance(meta.get("closed"), bool):
        block["closed"] = meta["closed"]
    return block


def _fragments(text: str, fragments: Any) -> list[dict[str, Any]] | None:
    """The thinking items that ``fragments`` (text lengths and other items, in order) cut ``text`` into;
    None when they do not describe ``text`` (then the text goes back as one item)."""
    if not isinstance(fragments, list):
        return None
    items, offset = [], 0
    for fragment in fragments:
        if isinstance(fragment, int) and not isinstance(fragment, bool) and fragment >= 0:
            items.append({"type": "text", "text": text[offset : offset + fragment]})
            offset += fragment
        elif isinstance(fragment, dict):
            items.append(dict(fragment))
        else:
            return None
    return items if offset == len(text) else None


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


class ThinkingBlock:
    """One thinking block of a reply, kept as its own llm reasoning part (``index`` is its ``part_index``).

    A whole message's ``thinking`` chunk is one block. A stream sends a block in fragments, one ``thinking``
    chunk per delta (``closed`` rides on ordinary fragments, so it does not end a block): the block lasts
    until a fragment carries a ``signature``, or text or a tool call comes. ``metadata`` is what replaying it
    needs beyond its text (see ``thinking_chunk``).
    """

    __slots__ = ("index", "length", "fragments", "signature", "closed", "sealed")

    def __init__(self, index: int) -> None:
        self.index = index
        self.length = 0  # characters of text
        self.fragments: list[Any] = []  # the length of each text item, and any other item as it came
        self.signature: str | None = None
        self.closed: bool | None = None
        self.sealed = False  # a signature ends a block

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self.signature is not None:
            meta["signature"] = self.signature
        if self.closed is not None:
            meta["closed"] = self.closed
        if self.fragments != ([self.length] if self.length else []):
            meta["fragments"] = self.fragments
        return {"mistral": meta}


class ReplyDecoder:
    """Turns OpenAI-shaped reply chunks (streamed deltas, one whole message, or completion texts) into llm events.

    ``take`` is the per-chunk hot path: it returns the text of a plain text delta as a ``str`` (llm
    wraps it), a list of events for anything richer, or ``None``. ``finish`` checks that the reply
    really ended, emits the accumulated tool calls and records usage on the response.

    Reasoning events carry explicit ``part_index`` values, odd numbers from 1, two apart: llm numbers the
    other parts itself (from 0, one more than the highest index seen), and at most one text part can start
    between two thinking blocks, so the numbers never meet.
    """

    __slots__ = ("label", "finish_reason", "usage", "model", "reply_id", "tool_calls", "text_length", "done",
                 "blocks", "open_block", "text_at_block")

    def __init__(self, label: str) -> None:
        self.label = label  # who sent the reply, for error messages
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.reply_id: str | None = None
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.text_length = 0
        self.done = False  # the stream ended with [DONE]: the server finished
        self.blocks: list[ThinkingBlock] = []
        self.open_block: ThinkingBlock | None = None  # the block a streamed thinking fragment continues
        self.text_at_block = 0  # text_length when the open block last grew: more text closes it

    def take(self, chunk: dict[str, Any]) -> Union[str, list[StreamEvent], None]:
        choices = chunk["choices"]
        if "usage" in chunk and chunk["usage"]:
            self.usage = chunk["usage"]
        if not choices:
            if chunk is STREAM_DONE:
                self.done = True
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
        return self._rich(delta, content, "message" in choice)

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

    def _block(self, whole: bool) -> ThinkingBlock:
        """The block a thinking chunk belongs to: a new one for each chunk of a whole message; in a stream,
        the open block unless a signature sealed it or text came since."""
        block = self.open_block
        if whole or block is None or block.sealed or self.text_length != self.text_at_block:
            block = ThinkingBlock(2 * len(self.blocks) + 1)
            self.blocks.append(block)
            self.open_block = block
        self.text_at_block = self.text_length
        return block

    def _reasoning(self, block: ThinkingBlock, text: str) -> StreamEvent:
        block.length += len(text)
        return StreamEvent(type="reasoning", chunk=text, part_index=block.index)

    def _rich(self, delta: dict[str, Any], content: Any, whole: bool) -> list[StreamEvent] | None:
        events: list[StreamEvent] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")  # llama.cpp server, vLLM
        if isinstance(reasoning, str) and reasoning:
            events.append(self._reasoning(self._block(whole), reasoning))
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
                    events += self._thinking(piece, whole)
        if delta.get("tool_calls"):
            self.open_block = None
        for position, call in enumerate(delta.get("tool_calls") or ()):
            slot = self.tool_calls.setdefault(call.get("index", position), {"id": None, "name": "", "arguments": ""})
            slot["id"] = slot["id"] or call.get("id")
            function = call.get("function") or {}
            slot["name"] += function.get("name") or ""
            arguments = function.get("arguments")
            slot["arguments"] += arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        return events or None

    def _thinking(self, piece: dict[str, Any], whole: bool) -> list[StreamEvent]:
        """The events of one Mistral ``thinking`` chunk, recorded in its block for replay. A new block without
        text still gets an (empty) event: llm orders a reply's parts by their first event."""
        known = len(self.blocks)
        block = self._block(whole)
        events = []
        for item in piece.get("thinking") or ():
            if not isinstance(item, dict):
                continue
            if item.get("type") == "text" and isinstance(item.get("text"), str):
                block.fragments.append(len(item["text"]))
                if item["text"]:
                    events.append(self._reasoning(block, item["text"]))
            else:
                block.fragments.append(item)
        if isinstance(piece.get("closed"), bool):
            block.closed = piece["closed"]
        if isinstance(piece.get("signature"), str):
            block.signature = piece["signature"]
            block.sealed = True
        if not events and len(self.blocks) > known:
            events.append(StreamEvent(type="reasoning", chunk="", part_index=block.index))
        return events

    def block_events(self) -> list[StreamEvent]:
        """One event per Mistral thinking block with what replaying it needs (llm keeps it on the part)."""
        return [
            StreamEvent(type="reasoning", chunk="", part_index=block.index, provider_metadata=block.metadata())
            for block in self.blocks
            if block.fragments or block.signature is not None or block.closed is not None
        ]

    def finish(self, response: llm.Response | llm.AsyncResponse, requested_model: str | None = None) -> list[StreamEvent]:
        """Close the reply: an unfinished one is an error; returns the thinking blocks' and tool calls' events.

        A reply is finished when a chunk gave a ``finish_reason`` or the stream ended with ``[DONE]`` (some
        proxies and compatible servers send no ``finish_reason``)."""
        if self.finish_reason is None and not self.done:
            raise StreamCutError(
                f"The reply from {self.label} ended before it was finished (no finish_reason: the "
                f"connection was cut after {self.text_length} characters). The text is incomplete; try again."
            )
        if self.finish_reason == "error":
            raise MistralSuiteError(f"{self.label} stopped the reply with an error.")
        events = self.block_events()
        for position, slot in enumerate(self.tool_calls.values()):
            try:
                arguments = json.loads(slot["arguments"] or "{}")
            except ValueError:
                raise MistralSuiteError(
                    f"The model called tool {slot['name']!r} with arguments that are not JSON: {slot['arguments'][:200]!r}"
                ) from None
            call_id = slot["id"] or wire_tool_call_id(f"{self.reply_id}-{slot['name']}-{2 * position}")
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

