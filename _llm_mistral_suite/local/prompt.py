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
from .vocab import MarkerSet, PromptVocab

REPLAY_KEY = "mistral_local"  # provider_metadata key of a reply's sampled token ids
_USER_PROBE = "\u27e6user-probe\u27e7"
_TOOL_MARKERS = ("[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]")


class Dialect(NamedTuple):
    """Which of mistral-common's instruct versions a model speaks, and what that version encodes how."""

    version: str  # mistral-common's InstructTokenizer version: "v3", "v7", "v11" or "v13"
    tools: bool  # tools can be given ([AVAILABLE_TOOLS] and the call and result tokens exist)
    think: bool  # [THINK]...[/THINK] reasoning tokens (Magistral)
    default_system: str  # the template's own system prompt for conversations without one ("" for none)

    @property
    def system_tokens(self) -> bool:
        """v7+: each system message as [SYSTEM_PROMPT]...[/SYSTEM_PROMPT] where it is; v3: all of them
        joined and put before the last user message's text."""
        return self.version != "v3"

    @property
    def tools_first(self) -> bool:
        """v13: [AVAILABLE_TOOLS] before the first user message; earlier versions: before the last."""
        return self.version == "v13"

    @property
    def call_args(self) -> bool:
        """v11+: each call as [TOOL_CALLS]name[ARGS]{...}; earlier: [TOOL_CALLS] and a JSON list of calls."""
        return self.version in ("v11", "v13")

    @property
    def results(self) -> str:
        """How tool results are written: "json" ({"content": ..., "call_id": ...}, v3), "tool-content"
        (id[TOOL_CONTENT]content, v7 and v11) or "plain" (v13)."""
        return {"v3": "json", "v13": "plain"}.get(self.version, "tool-content")


class ToolCallTurn(NamedTuple):
    id: str
    name: str
    arguments: Any


class Turn:
    """One message of the conversation, normalized as mistral-common normalizes a chat request."""

    __slots__ = ("role", "text", "reasoning", "calls", "call_id", "images", "replay", "from_template")

    def __init__(self, role: str, text: str = "", *, reasoning: str = "", calls: list[ToolCallTurn] | None = None,
                 call_id: str = "", images: list[Any] | None = None, replay: dict[str, Any] | None = None,
                 from_template: bool = False) -> None:
        self.role, self.text, self.reasoning, self.calls = role, text, reasoning, calls or []
        self.call_id, self.images, self.replay = call_id, images or [], replay
        self.from_template = from_template  # written by the chat template: control-token names in it are tokens


class ImageSlot(NamedTuple):
    """Where an image goes in a prompt; ``vision.py`` turns it into the projector's embeddings."""

    attachment: Any


def chat_dialect(template: str | None, vocab: MarkerSet, render: Callable[..., str] | None = None) -> Dialect | None:
    """How a GGUF with this template and vocabulary is prompted (the one decision, for a loaded model and for
    `llm mistral local list`): ``read_dialect``'s format, or None for a vocabulary without ``[INST]`` control
    tokens (v1 models, other families), which is fed its template's text and takes no tools."""
    if not vocab.mistral_instruct:
        return None
    return read_dialect(template, vocab, render if template else None)


def read_dialect(template: str | None, vocab: MarkerSet, render: Callable[..., str] | None = None) -> Dialect:
    """The instruct version a GGUF speaks, read from the control tokens its ``tokenizer.chat_template`` writes
    (and its vocabulary has): ``[ARGS]`` is v11 (with ``[CALL_ID]`` or ``[TOOL_CONTENT]``) or v13,
    ``[SYSTEM_PROMPT]`` v7, anything else v3. ``render`` (the template as a function of ``messages``) gives
    the default system prompt a v7+ template writes when the conversation has none. Without a template:
    v3, with tools if the vocabulary has their tokens.
    """
    text = template or ""

    def writes(*names: str) -> bool:
        return all(name in text for name in names) and vocab.has(*names)

    if writes("[ARGS]", "[TOOL_CALLS]"):
        version = "v11" if ("[CALL_ID]" in text or "[TOOL_CONTENT]" in text) and vocab.has("[CALL_ID]") else "v13"
    elif writes("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"):
        version = "v7"
    else:
        version = "v3"
    if version in ("v7", "v11") and not vocab.has("[TOOL_CONTENT]"):
        version = "v3" if version == "v7" else "v13"  # results need [TOOL_CONTENT]; the nearest version without
    tools = vocab.has(*_TOOL_MARKERS) and (not template or "[AVAILABLE_TOOLS]" in text or "[TOOL_CALLS]" in text)
    default_system = _probe_default_system(render) if render is not None and version != "v3" else ""
    think = vocab.has("[THINK]", "[/THINK]") and ("[THINK]" in text or "[THINK]" in default_system)
    return Dialect(version, tools, think, default_system)


def _probe_default_system(render: Callable[..., str]) -> str:
    """The system prompt the template writes when the conversation has none."""
    try:
        rendered = render(messages=[{"role": "user", "content": _USER_PROBE}])
    except Exception:  # a template that wants other shapes: no default
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
                    turns.append(Turn("tool", output, call_id=wire_id(part.tool_call_id)))
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
        joiner = "" if message.role == "assistant" else "\n"  # a reply's text parts, as they were printed
        turns.append(Turn(message.role, joiner.join(texts), reasoning="".join(reasoning), calls=calls,
                          images=images, replay=replay))
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
    if vocab.reply_text(ids) != turn.reasoning + turn.text:
        return None
    return ids


def encode_chat(turns: list[Turn], tools: list[dict[str, Any]], dialect: Dialect, vocab: PromptVocab,
                model_id: str) -> list[Any]:
    """The prompt for ``turns`` as mistral-common encodes it: token ids, and an ``ImageSlot`` per image."""
    if tools and not dialect.tools:
        raise MistralSuiteError(f"{model_id} cannot use tools: its chat template has no tool format "
                                "([AVAILABLE_TOOLS]). Use a model whose GGUF template takes tools, or drop -T/--functions.")
    if not any(turn.role == "system" for turn in turns) and dialect.default_system:
        turns = [Turn("system", dialect.default_system, from_template=True), *turns]
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
        elif turn.role == "system":  # your text stays text, as in mistral-common; the template's may hold [THINK]
            text = _text_with_markers(turn.text, vocab) if turn.from_template else vocab.text(turn.text)
            ids += [vocab.marker("[SYSTEM_PROMPT]"), *text, vocab.marker("[/SYSTEM_PROMPT]")]
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
            if dialect.version == "v11":
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
    elif dialect.results == "tool-content":
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
