"""Mistral's instruct format as token ids, built as mistral-common builds them, in the dialect of the GGUF's template.

mistral-common (Mistral's own tokenizer library) is the reference: each text piece between control tokens is
tokenized on its own (``PromptVocab.text``), never a rendered string as a whole. The GGUF's chat template says
which of Mistral's instruct versions the model speaks (``read_dialect``): where its system prompt, tools, tool
calls and results, and thinking go. Where a template's own text differs (a space after ``[INST]``, the JSON
layout of the tools, a default system prompt inside the template), mistral-common's encoding wins.
"""

from __future__ import annotations

import json
from typing import Any, Callable, NamedTuple

from ..errors import MistralSuiteError
from .vocab import PromptVocab

REPLAY_KEY = "mistral_local"  # provider_metadata key of a reply's sampled token ids
_USER_PROBE, _OTHER_PROBE = "\u27e6user-probe\u27e7", "\u27e6other-probe\u27e7"
_TOOL_MARKERS = ("[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]")


class Dialect(NamedTuple):
    """Which of mistral-common's instruct versions a model's template speaks, feature by feature."""

    version: str  # the nearest of mistral-common's InstructTokenizer versions: "v3", "v7", "v11" or "v13"
    system_tokens: bool  # [SYSTEM_PROMPT]...[/SYSTEM_PROMPT] where the message is (v7+); else before the last user turn
    tools: bool  # the template renders tools ([AVAILABLE_TOOLS])
    tools_first: bool  # tools before the first user turn (v13) instead of the last
    call_args: bool  # calls as [TOOL_CALLS]name[ARGS]{...} (v11+) instead of [TOOL_CALLS][{"name": ...}]
    call_ids: bool  # [CALL_ID]id between name and [ARGS] (v11)
    results: str  # tool results: "json" ({"content": ..., "call_id": ...}), "tool-content" (v7) or "plain" (v13)
    think: bool  # [THINK]...[/THINK] reasoning tokens
    default_system: str  # the template's system prompt when the conversation has none ("" for none)


class ToolCallTurn(NamedTuple):
    id: str
    name: str
    arguments: Any


class Turn:
    """One message of the conversation, normalized as mistral-common normalizes a chat request."""

    __slots__ = ("role", "text", "reasoning", "calls", "call_id", "name", "images", "replay")

    def __init__(self, role: str, text: str = "", *, reasoning: str = "", calls: list[ToolCallTurn] | None = None,
                 call_id: str = "", name: str = "", images: list[Any] | None = None,
                 replay: dict[str, Any] | None = None) -> None:
        self.role, self.text, self.reasoning, self.calls = role, text, reasoning, calls or []
        self.call_id, self.name, self.images, self.replay = call_id, name, images or [], replay


class ImageSlot(NamedTuple):
    """Where an image goes in a prompt; ``vision.py`` turns it into the projector's embeddings."""

    attachment: Any


def read_dialect(template: str | None, vocab: PromptVocab, render: Callable[..., str] | None = None) -> Dialect:
    """The dialect of ``template`` (a GGUF's ``tokenizer.chat_template``) for a Mistral instruct vocabulary.

    Read from the control tokens the template writes, and from ``render`` (the template as a function of
    ``messages`` and ``tools``) for where tools and the default system prompt go. No template: Mistral's v3
    format, with tools if the vocabulary has their control tokens.
    """
    text = template or ""

    def writes(name: str) -> bool:
        return name in text and vocab.has(name)

    if not template:
        tools = vocab.has(*_TOOL_MARKERS)
        return Dialect("v3", False, tools, False, False, False, "json", False, "")
    system_tokens = writes("[SYSTEM_PROMPT]") and vocab.has("[/SYSTEM_PROMPT]")
    call_args = writes("[ARGS]")
    call_ids = call_args and writes("[CALL_ID]")
    tools = vocab.has(*_TOOL_MARKERS) and ("[AVAILABLE_TOOLS]" in text or "[TOOL_CALLS]" in text)
    if writes("[TOOL_CONTENT]"):
        results = "tool-content"
    elif "call_id" in text or not (call_args or system_tokens):
        results = "json"
    else:
        results = "plain"
    version = "v13" if call_args and results == "plain" else "v11" if call_args else "v7" if system_tokens else "v3"
    tools_first = version == "v13"
    default_system = ""
    if render is not None:
        tools_first = _probe_tools_first(render, tools_first) if tools else tools_first
        if system_tokens:
            default_system = _probe_default_system(render)
    think = writes("[THINK]") and vocab.has("[/THINK]") or (vocab.has("[THINK]", "[/THINK]") and "[THINK]" in default_system)
    return Dialect(version, system_tokens, tools, tools_first, call_args, call_ids, results, think, default_system)


def _probe_tools_first(render: Callable[..., str], default: bool) -> bool:
    """Whether the template puts [AVAILABLE_TOOLS] before the first user turn of two."""
    probe_tool = {"type": "function", "function": {"name": "probe", "description": "", "parameters": {
        "type": "object", "properties": {}}}}
    messages = [{"role": "user", "content": _USER_PROBE}, {"role": "assistant", "content": "a"},
                {"role": "user", "content": _OTHER_PROBE}]
    try:
        rendered = render(messages=messages, tools=[probe_tool])
    except Exception:  # a template that wants other shapes: keep the version's rule
        return default
    at = rendered.find("[AVAILABLE_TOOLS]")
    first, last = rendered.find(_USER_PROBE), rendered.find(_OTHER_PROBE)
    if at < 0 or first < 0 or last < 0:
        return default
    return at < first


def _probe_default_system(render: Callable[..., str]) -> str:
    """The system prompt the template writes when the conversation has none."""
    try:
        rendered = render(messages=[{"role": "user", "content": _USER_PROBE}])
    except Exception:
        return ""
    start, end = rendered.find("[SYSTEM_PROMPT]"), rendered.find("[/SYSTEM_PROMPT]")
    if start < 0 or end < start or _USER_PROBE in rendered[start:end]:
        return ""
    return rendered[start + len("[SYSTEM_PROMPT]"):end]


# --- llm's messages to turns ---------------------------------------------------------------------------


def local_turns(messages: list[Any], wire_id: Callable[[str | None], str]) -> list[Turn]:
    """llm's ``prompt.messages`` as turns: text joined per message, tool call ids in Mistral's 9-character form."""
    from llm.parts import AttachmentPart, ReasoningPart, TextPart, ToolCallPart, ToolResultPart

    turns: list[Turn] = []
    for message in messages:
        if message.role == "tool":
            for part in message.parts:
                if isinstance(part, ToolResultPart):
                    output = part.output if not part.exception else f"Error: {part.exception}"
                    turns.append(Turn("tool", output, call_id=wire_id(part.tool_call_id), name=part.name))
            continue
        texts, reasoning, calls, images, replay = [], [], [], [], None
        for part in message.parts:
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ReasoningPart) and part.text:
                reasoning.append(part.text)
            elif isinstance(part, ToolCallPart):
                calls.append(ToolCallTurn(wire_id(part.tool_call_id), part.name, part.arguments))
            elif isinstance(part, AttachmentPart) and part.attachment is not None:
                images.append(part.attachment)
            metadata = getattr(part, "provider_metadata", None) or {}
            if isinstance(metadata.get(REPLAY_KEY), dict):
                replay = metadata[REPLAY_KEY]
        turns.append(Turn(message.role, "\n".join(texts), reasoning="".join(reasoning), calls=calls, images=images,
                          replay=replay))
    return turns


def normalize_turns(turns: list[Turn], dialect: Dialect) -> tuple[list[Turn], str]:
    """mistral-common's normalization: consecutive user (and assistant) turns joined with a blank line,
    system turns gathered into one system prompt (v3) or kept where they are (v7+), a conversation that does
    not start with a user turn given an empty one. Returns the turns and the v3 system prompt."""
    systems: list[str] = []
    result: list[Turn] = []
    for turn in turns:
        if turn.role == "system":
            if not turn.text:
                continue
            if not dialect.system_tokens:
                systems.append(turn.text)
                continue
        previous = result[-1] if result else None
        if previous is not None and previous.role == turn.role and turn.role in ("user", "assistant"):
            joined = [text for text in (previous.text, turn.text) if text]
            merged = Turn(turn.role, "\n\n".join(joined), reasoning=previous.reasoning + turn.reasoning,
                          calls=previous.calls + turn.calls, images=previous.images + turn.images)
            result[-1] = merged  # a merged reply no longer matches its sampled tokens: no replay
        else:
            result.append(turn)
    if not result or (result[0].role not in ("user", "system")) or (not dialect.system_tokens and result[0].role != "user"):
        result.insert(0, Turn("user"))
    return result, "\n\n".join(systems)


# --- turns to token ids --------------------------------------------------------------------------------


def replay_tokens(turn: Turn, vocab: PromptVocab) -> list[int] | None:
    """The ids the model sampled for this reply, if they were kept for this vocabulary and still spell it."""
    replay = turn.replay
    if not replay or replay.get("vocab") != vocab.fingerprint or turn.calls:
        return None
    ids = replay.get("tokens")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and 0 <= i < vocab.n_vocab for i in ids):
        return None
    if vocab.decode(ids) != turn.reasoning + turn.text:
        return None
    return ids


def encode_chat(turns: list[Turn], tools: list[dict[str, Any]], dialect: Dialect, vocab: PromptVocab,
                model_id: str) -> list[Any]:
    """The prompt for ``turns`` as mistral-common encodes it: token ids, and an ``ImageSlot`` per image."""
    if tools and not dialect.tools:
        raise MistralSuiteError(f"{model_id} cannot use tools: its chat template has no tool format "
                                "([AVAILABLE_TOOLS]). Use a model whose GGUF template takes tools, or drop -T/--functions.")
    if not any(turn.role == "system" for turn in turns) and dialect.default_system:
        turns = [Turn("system", dialect.default_system), *turns]
    turns, system_prompt = normalize_turns(turns, dialect)
    users = [index for index, turn in enumerate(turns) if turn.role == "user"]
    tools_at = (users[0] if dialect.tools_first else users[-1]) if users and tools else -1
    ids: list[Any] = [vocab.bos] if vocab.bos >= 0 else []
    for index, turn in enumerate(turns):
        if turn.role == "user":
            if index == tools_at:
                ids += [vocab.marker("[AVAILABLE_TOOLS]"), *vocab.text(json.dumps(tools, ensure_ascii=False)),
                        vocab.marker("[/AVAILABLE_TOOLS]")]
            ids.append(vocab.marker("[INST]"))
            system = system_prompt if index == users[-1] else ""
            if turn.images:
                ids += vocab.text(system + "\n\n") if system else []
                ids += [ImageSlot(image) for image in turn.images]
                ids += vocab.text(turn.text)
            else:
                ids += vocab.text(system + "\n\n" + turn.text if system else turn.text)
            ids.append(vocab.marker("[/INST]"))
        elif turn.role == "system":
            ids += [vocab.marker("[SYSTEM_PROMPT]"), *_text_with_markers(turn.text, vocab),
                    vocab.marker("[/SYSTEM_PROMPT]")]
        elif turn.role == "assistant":
            ids += _assistant(turn, dialect, vocab)
        elif turn.role == "tool":
            ids += _tool_result(turn, dialect, vocab)
    return ids


def _assistant(turn: Turn, dialect: Dialect, vocab: PromptVocab) -> list[int]:
    replayed = replay_tokens(turn, vocab)
    if replayed is not None:
        return [*replayed, vocab.eos]
    ids: list[int] = []
    if turn.reasoning and dialect.think:
        ids += [vocab.marker("[THINK]"), *vocab.text(turn.reasoning), vocab.marker("[/THINK]")]
    if turn.text.rstrip(" "):
        ids += vocab.text(turn.text.rstrip(" "))
    if turn.calls and dialect.call_args:
        for call in turn.calls:
            ids += [vocab.marker("[TOOL_CALLS]"), *vocab.text(call.name)]
            if dialect.call_ids and vocab.has("[CALL_ID]"):
                ids += [vocab.marker("[CALL_ID]"), *vocab.text(call.id)]
            ids += [vocab.marker("[ARGS]"), *vocab.text(json.dumps(_json_value(call.arguments), ensure_ascii=False))]
    elif turn.calls:
        calls = [{"name": call.name, "arguments": _json_value(call.arguments), "id": call.id} for call in turn.calls]
        ids += [vocab.marker("[TOOL_CALLS]"), *vocab.text(json.dumps(calls, ensure_ascii=False))]
    return [*ids, vocab.eos] if ids else []


def _tool_result(turn: Turn, dialect: Dialect, vocab: PromptVocab) -> list[int]:
    content = _normalized_json(turn.text)
    if dialect.results == "json":
        body = vocab.text(json.dumps({"content": _json_value(content), "call_id": turn.call_id}, ensure_ascii=False))
    elif dialect.results == "tool-content" and vocab.has("[TOOL_CONTENT]"):
        body = [*vocab.text(turn.call_id), vocab.marker("[TOOL_CONTENT]"), *vocab.text(content)]
    else:
        body = vocab.text(content)
    return [vocab.marker("[TOOL_RESULTS]"), *body, vocab.marker("[/TOOL_RESULTS]")]


def _normalized_json(text: str) -> str:
    """mistral-common's normalization of tool output and arguments: JSON re-dumped, anything else kept."""
    if not text:
        return "{}"
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:
        return text


def _json_value(value: Any) -> Any:
    """A JSON string parsed, as mistral-common parses tool output and arguments before dumping them again."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _text_with_markers(text: str, vocab: PromptVocab) -> list[int]:
    """Template-written text (a default system prompt) whose control-token names become the tokens."""
    import re

    names = [re.escape(name) for name in sorted(vocab.markers, key=len, reverse=True)]
    if not names:
        return vocab.text(text)
    ids: list[int] = []
    for piece in re.split("(" + "|".join(names) + ")", text):
        if piece in vocab.markers:
            ids.append(vocab.markers[piece])
        elif piece:
            ids += vocab.text(piece)
    return ids


def encode_fim(vocab: PromptVocab, model_id: str, prefix: str, suffix: str) -> list[int]:
    """Codestral's fill-in-the-middle prompt as mistral-common's ``encode_fim`` builds it:
    ``<s>[SUFFIX]suffix[PREFIX]prefix``, the suffix without SentencePiece's dummy prefix, the prefix with it;
    the model then writes the middle and EOS. (llama-cpp-python's own ``suffix=`` path uses token id 0 for
    the markers.)"""
    if not vocab.has("[PREFIX]", "[SUFFIX]"):
        raise MistralSuiteError(f"{model_id} has no fill-in-the-middle tokens ([PREFIX]/[SUFFIX]); "
                                "use a Codestral GGUF or the API's codestral-fim")
    bos = [vocab.bos] if vocab.bos >= 0 and vocab.llama._model.add_bos_token() else []
    return [*bos, vocab.marker("[SUFFIX]"), *vocab.infill(suffix), vocab.marker("[PREFIX]"), *vocab.text(prefix)]
