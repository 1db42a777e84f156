"""Tools on local models: the llama.cpp grammar that enforces ``tool_choice``, and the model's calls read from its output."""

from __future__ import annotations

import json
import secrets
import string
from typing import Any, NamedTuple

from ..errors import MistralSuiteError
from ..wire import strict_schema
from .prompt import Dialect
from .vocab import PromptVocab

TOOL_CHOICES = ("auto", "none", "any", "required")  # or the name of one tool
_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """A tool call id as Mistral's models expect them: 9 letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


class CallText:
    """One tool call as the model wrote it, between control tokens: ``[TOOL_CALLS]head[CALL_ID]id[ARGS]args``.

    In v3 the head holds the whole JSON list of calls; from v11 on it is the tool's name."""

    __slots__ = ("head", "id", "args", "part")

    def __init__(self) -> None:
        self.head, self.id, self.args = "", "", ""
        self.part = "head"  # which of them the model is writing

    def add(self, text: str) -> None:
        setattr(self, self.part, getattr(self, self.part) + text)


class ParsedCall(NamedTuple):
    name: str
    arguments: dict[str, Any]
    id: str


def parse_calls(calls: list[CallText], model_id: str, tool_names: set[str]) -> list[ParsedCall]:
    """llm tool calls from the model's ``[TOOL_CALLS]`` output, in either of Mistral's formats."""
    parsed: list[ParsedCall] = []
    for call in calls:
        if call.part == "head" and call.head.strip().startswith(("[", "{")):  # v3: a JSON list (or one object)
            try:
                items = json.loads(call.head)
            except ValueError:
                raise _not_json(model_id, call.head) from None
            for item in items if isinstance(items, list) else [items]:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise _not_json(model_id, call.head)
                parsed.append(ParsedCall(item["name"], _arguments(item.get("arguments"), model_id),
                                         _valid_id(item.get("id"))))
        else:  # v11+: name[CALL_ID]id[ARGS]{...}
            name = call.head.strip()
            if not name:
                raise _not_json(model_id, call.head + call.args)
            parsed.append(ParsedCall(name, _arguments(call.args or "{}", model_id), _valid_id(call.id.strip())))
    for call in parsed:
        if call.name not in tool_names:
            known = ", ".join(sorted(tool_names)) or "none"
            raise MistralSuiteError(f"{model_id} called a tool it was not given: {call.name!r} (tools: {known}).")
    return parsed


def _arguments(value: Any, model_id: str) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise _not_json(model_id, value) from None
    if not isinstance(value, dict):
        raise _not_json(model_id, json.dumps(value))
    return value


def _valid_id(value: Any) -> str:
    if isinstance(value, str) and len(value) == 9 and value.isascii() and value.isalnum():
        return value
    return new_call_id()


def _not_json(model_id: str, text: str) -> MistralSuiteError:
    return MistralSuiteError(f"{model_id} wrote a tool call that is not valid JSON: {text[:200]!r}. "
                             "Try again, or force a well-formed call with -o tool_choice any.")


def tool_grammar(choice: str | None, tools: list[dict[str, Any]], dialect: Dialect, vocab: PromptVocab,
                 model_id: str) -> str | None:
    """A GBNF grammar enforcing ``choice`` over ``tools`` (OpenAI-style definitions), or None for "auto".

    "none" forbids the ``[TOOL_CALLS]`` token; "any"/"required" or a tool's name make the reply well-formed calls
    (one to as many as there are tools, or one of the named tool), each with arguments matching the tool's JSON
    schema, in the model's format.
    Control tokens are written as ``<[id]>``, which llama.cpp's grammars match by token id.
    """
    if not tools or choice in (None, "auto"):
        return None
    calls = vocab.marker("[TOOL_CALLS]")
    if choice == "none":
        return f"root ::= ( !<[{calls}]> )*"
    names = [tool["function"]["name"] for tool in tools]
    if choice not in ("any", "required"):
        if choice not in names:
            raise MistralSuiteError(f"tool_choice {choice!r} is not one of the tools given to {model_id}: "
                                    f"{', '.join(names)} (or auto, none, any, required).")
        tools = [tool for tool in tools if tool["function"]["name"] == choice]
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    parameters = []
    for index, tool in enumerate(tools):
        schema = strict_schema(tool["function"].get("parameters") or {"type": "object", "properties": {}})
        try:
            parameters.append(converter.visit(converter.resolve_refs(schema, f"tool-{index}"), f"args-{index}"))
        except Exception as exc:  # a schema feature llama.cpp's converter lacks
            raise MistralSuiteError(f"The arguments of tool {tool['function']['name']!r} cannot be enforced on "
                                    f"{model_id} ({exc or type(exc).__name__}); use -o tool_choice auto.") from None
    if dialect.call_args:  # [TOOL_CALLS]name[ARGS]{...}, one block per call
        args = vocab.marker("[ARGS]")
        alternatives = " | ".join(f'{converter._format_literal(tool["function"]["name"])} <[{args}]> {rule}'
                                  for tool, rule in zip(tools, parameters))
        rules = [f"root ::= call{{1,{len(tools)}}}", f'call ::= <[{calls}]> " "? ( {alternatives} )']
    else:  # v3: [TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]
        objects = []
        for tool, rule in zip(tools, parameters):
            name = converter._format_literal(json.dumps(tool["function"]["name"]))
            objects.append(f'"{{" space "\\"name\\"" space ":" space {name} space "," space '
                           f'"\\"arguments\\"" space ":" space {rule} "}}" space')
        more = f'( "," space call ){{0,{len(tools) - 1}}} ' if len(tools) > 1 else ""
        rules = [f'root ::= <[{calls}]> " "? "[" space call {more}"]" space', f"call ::= {' | '.join(objects)}"]
    return converter.format_grammar() + "\n" + "\n".join(rules) + "\n"
