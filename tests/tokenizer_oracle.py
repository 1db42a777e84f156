"""Reference token ids from mistral-common (Mistral's official tokenizer) and llama.cpp's ids, for comparing them."""

from __future__ import annotations

import difflib
import functools
from typing import TYPE_CHECKING, Any, Literal

from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from gguf_factory import mistral_tokenizer_file

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = [
    "SPECIAL_TOKENS", "mistral_tokenizer", "special_token_ids", "text_ids", "chat_ids", "fim_ids", "pieces",
    "llama_ids", "diff",
]  # fmt: skip

Kind = Literal["v3", "tekken", "tekken-v7", "tekken-v11", "tekken-v13"]

# Control tokens the plugin's prompts may use; not every vocabulary has all of them (v3 lacks [SYSTEM_PROMPT]).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[PREFIX]", "[SUFFIX]", "[MIDDLE]",
)  # fmt: skip


@functools.cache
def mistral_tokenizer(kind: Kind) -> MistralTokenizer:
    """mistral-common's tokenizer from the file ``gguf_factory.MISTRAL_TOKENIZER_FILES[kind]`` names: the same
    one ``MistralTokenizer.v3()`` ("v3", which needs the sentencepiece package) or ``.v3(is_tekken=True)`` loads;
    "tekken-v7"/"-v11"/"-v13" are InstructTokenizerV7/V11/V13 on Nemo's vocabulary (``DERIVED_TEKKEN_VERSIONS``)."""
    return MistralTokenizer.from_file(mistral_tokenizer_file(kind))


def special_token_ids(kind: Kind) -> dict[str, int]:
    """Ids of those ``SPECIAL_TOKENS`` that ``kind``'s vocabulary has."""
    tokenizer = mistral_tokenizer(kind).instruct_tokenizer.tokenizer
    ids = {}
    for name in SPECIAL_TOKENS:
        try:
            token = tokenizer.get_special_token(name)
        except ValueError:  # tekken raises for a name it lacks
            continue
        if tokenizer.id_to_piece(token) == name:  # SentencePiece answers <unk>'s id 0 instead
            ids[name] = token
    return ids


def text_ids(kind: Kind, text: str) -> list[int]:
    """mistral-common's ids for plain ``text``, without BOS/EOS (SentencePiece adds its "▁" dummy prefix)."""
    return mistral_tokenizer(kind).instruct_tokenizer.tokenizer.encode(text, bos=False, eos=False)


def chat_ids(kind: Kind, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
    """The ids Mistral feeds the model for an OpenAI-style chat request, BOS included.

    ``messages`` have roles system, user, assistant (``content`` and/or ``tool_calls`` with ``id``,
    ``function.name`` and ``function.arguments`` as a JSON string; v3 tool-call ids are 9 letters/digits)
    and tool (``tool_call_id``, ``content``); ``tools`` are OpenAI function tools. Both tokenizers (v3
    instruct format) put the system prompt before the last user message and ``[AVAILABLE_TOOLS]`` just
    before the last ``[INST]``.
    """
    request = ChatCompletionRequest.from_openai(messages, tools)
    return mistral_tokenizer(kind).encode_chat_completion(request).tokens


def fim_ids(kind: Kind, prompt: str, suffix: str) -> list[int]:
    """The ids for a fill-in-the-middle request: ``<s>[SUFFIX]suffix[PREFIX]prompt``, the model writes the middle."""
    return mistral_tokenizer(kind).encode_fim(FIMRequest(prompt=prompt, suffix=suffix)).tokens


def pieces(kind: Kind, ids: list[int]) -> list[str]:
    """The vocabulary pieces of ``ids`` (SentencePiece shows spaces as "▁" and bytes as "<0x0A>")."""
    tokenizer = mistral_tokenizer(kind).instruct_tokenizer.tokenizer
    return [tokenizer.id_to_piece(i) for i in ids]


def llama_ids(llama: Llama, text: str) -> list[int]:
    """llama.cpp's ids for ``text``: no BOS added, control-token names like ``[INST]`` parsed as tokens.

    Measured against mistral-common (test_tokenizer_oracle): with the v3 vocabulary and
    ``tokenizer.ggml.add_space_prefix`` true (llama.cpp's default for SentencePiece) llama.cpp puts a "▁"
    before the text at the start and after every control token, so a prompt string matches mistral-common
    only without spaces after control tokens, and FIM's ``[SUFFIX]`` text (which must not get one) never
    does; with it false no "▁" is added, so the string must spell SentencePiece's dummy-prefix spaces
    (``[INST] Hello``). tekken adds nothing: ``[INST]Hello`` matches, ``[INST] Hello`` does not.
    """
    return llama.tokenize(text.encode(), add_bos=False, special=True)


def diff(kind: Kind, expected: list[int], actual: list[int]) -> list[tuple[str, list[str], list[str]]]:
    """Where ``actual`` differs from ``expected``, as (the expected piece just before or "^", the expected
    pieces, the actual pieces) per changed span; [] when they are equal."""
    matcher = difflib.SequenceMatcher(a=expected, b=actual, autojunk=False)
    return [
        (pieces(kind, [expected[i1 - 1]])[0] if i1 else "^", pieces(kind, expected[i1:i2]), pieces(kind, actual[j1:j2]))
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
        if op != "equal"
    ]
