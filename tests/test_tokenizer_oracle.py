"""Mistral's real vocabularies in tiny GGUFs against mistral-common's ids, and how naive prompt strings differ."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mistral_common")

from gguf_factory import write_mistral_vocab_gguf  # noqa: E402
from tokenizer_oracle import (  # noqa: E402
    chat_ids, diff, fim_ids, llama_ids, mistral_tokenizer, pieces, special_token_ids, text_ids,
)  # fmt: skip

# The GGUFs compared: the v3 SentencePiece vocabulary with tokenizer.ggml.add_space_prefix true, false or
# left out (llama.cpp then defaults to true), and tekken (BPE, where the key does not apply).
CONFIGS: dict[str, tuple[str, bool | None]] = {
    "v3-space-true": ("v3", True),
    "v3-space-false": ("v3", False),
    "v3-space-unset": ("v3", None),
    "tekken": ("tekken", None),
}

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]  # fmt: skip
TOOL_CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "abcDEF123", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }]},
    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temp": 21}'},
    {"role": "assistant", "content": "21 degrees."},
    {"role": "user", "content": "Thanks!"},
]  # fmt: skip
FIM_PROMPT, FIM_SUFFIX = "def f(x):\n    return ", "\n\nprint(f(2))"

PLAIN_TEXTS = {
    "english": "Hello, world! How are you today?",
    "code": "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "non-ascii": "Größe café naïve 東京 😀 Привет",
    "spaces": " leading space, two  spaces,\ttab",
}


def _need(kind: str) -> None:
    if kind == "v3":  # mistral-common reads .model files with the optional sentencepiece package
        pytest.importorskip("sentencepiece", reason="v3 needs mistral-common[sentencepiece]")


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Writes (once per module) the GGUF for a vocabulary, add_space_prefix and architecture."""
    made: dict[tuple[str, bool | None, str], Path] = {}

    def get(kind: str, add_space_prefix: bool | None = None, arch: str = "llama") -> Path:
        _need(kind)
        key = (kind, add_space_prefix, arch)
        if key not in made:
            folder = tmp_path_factory.mktemp("vocab")
            made[key] = write_mistral_vocab_gguf(folder / f"{kind}-{arch}.gguf", kind, arch=arch,
                                                 add_space_prefix=add_space_prefix)  # fmt: skip
        return made[key]

    return get


@pytest.fixture(scope="module")
def vocab_llama(gguf_file: Callable[..., Path]) -> Callable[[str], Any]:
    """A vocabulary-only ``Llama`` per name of ``CONFIGS`` (loaded once per module)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    made: dict[str, Any] = {}

    def get(config: str) -> Any:
        if config not in made:
            made[config] = llama_cpp.Llama(str(gguf_file(*CONFIGS[config])), vocab_only=True, verbose=False)
        return made[config]

    return get


# --- the oracle itself (mistral-common only) ------------------------------------------------------------


SPECIAL_IDS = {
    "v3": {  # no [SYSTEM_PROMPT]
        "<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "[TOOL_CALLS]": 5, "[AVAILABLE_TOOLS]": 6,
        "[/AVAILABLE_TOOLS]": 7, "[TOOL_RESULTS]": 8, "[/TOOL_RESULTS]": 9, "[PREFIX]": 11, "[MIDDLE]": 12,
        "[SUFFIX]": 13,
    },
    "tekken": {
        "<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "[AVAILABLE_TOOLS]": 5, "[/AVAILABLE_TOOLS]": 6,
        "[TOOL_RESULTS]": 7, "[/TOOL_RESULTS]": 8, "[TOOL_CALLS]": 9, "[PREFIX]": 14, "[MIDDLE]": 15,
        "[SUFFIX]": 16, "[SYSTEM_PROMPT]": 17, "[/SYSTEM_PROMPT]": 18,
    },
}  # fmt: skip


@pytest.mark.parametrize("kind", ["v3", "tekken"])
def test_special_token_ids(kind):
    _need(kind)
    assert special_token_ids(kind) == SPECIAL_IDS[kind]


@pytest.mark.parametrize("kind", ["v3", "tekken"])
def test_chat_and_fim_layout(kind):
    """Nemo's tekken tokenizer is a v3 instruct tokenizer too: same layout, [SYSTEM_PROMPT] unused."""
    _need(kind)
    specials = {token: name for name, token in special_token_ids(kind).items()}
    ids = chat_ids(kind, TOOL_CHAT, TOOLS)
    assert [specials[i] for i in ids if i in specials] == [
        "<s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "</s>", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "</s>",
        "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[INST]", "[/INST]",
    ]  # fmt: skip
    last_inst = max(i for i, token in enumerate(ids) if token == special_token_ids(kind)["[INST]"])
    last_turn = ids[last_inst + 1 : -1]
    assert mistral_tokenizer(kind).decode(last_turn).strip() == "Be brief.\n\nThanks!"
    fim = fim_ids(kind, FIM_PROMPT, FIM_SUFFIX)
    suffix_id, prefix_id = special_token_ids(kind)["[SUFFIX]"], special_token_ids(kind)["[PREFIX]"]
    split = fim.index(prefix_id)
    assert fim[:2] == [1, suffix_id]
    assert mistral_tokenizer(kind).decode(fim[2:split]) == FIM_SUFFIX
    assert mistral_tokenizer(kind).decode(fim[split + 1 :]).strip() == FIM_PROMPT.strip()


# --- the GGUF vocabularies against mistral-common -------------------------------------------------------


@pytest.mark.parametrize("config", ["v3-space-true", "v3-space-false", "tekken"])
def test_gguf_vocab_matches_mistral_common(config, vocab_llama):
    import llama_cpp

    kind = CONFIGS[config][0]
    _need(kind)
    llm = vocab_llama(config)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    tokenizer = mistral_tokenizer(kind).instruct_tokenizer.tokenizer
    n_tokens = llama_cpp.llama_vocab_n_tokens(vocab)
    assert n_tokens == tokenizer.n_words == {"v3": 32768, "tekken": 131072}[kind]
    assert llama_cpp.llama_vocab_type(vocab) == (
        llama_cpp.LLAMA_VOCAB_TYPE_SPM if kind == "v3" else llama_cpp.LLAMA_VOCAB_TYPE_BPE
    )
    assert (llama_cpp.llama_vocab_bos(vocab), llama_cpp.llama_vocab_eos(vocab)) == (tokenizer.bos_id, tokenizer.eos_id)
    attrs = [llama_cpp.llama_vocab_get_attr(vocab, i) for i in range(n_tokens)]
    control = [i for i, attr in enumerate(attrs) if attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL]
    assert control == [i for i in range(n_tokens) if tokenizer.is_special(i)]
    assert control == list(range(1, 751) if kind == "v3" else range(1000))  # v3's <unk> (0) is UNKNOWN
    for name, token in special_token_ids(kind).items():
        assert llama_ids(llm, name) == [token], name
        assert llama_cpp.llama_vocab_get_text(vocab, token).decode() == name
    byte = [i for i, attr in enumerate(attrs) if attr & llama_cpp.LLAMA_TOKEN_ATTR_BYTE]
    assert byte == (list(range(771, 1027)) if kind == "v3" else [])  # <0x00>..<0xFF>; tekken is byte-level BPE
    metadata = llm.metadata
    assert metadata["tokenizer.ggml.model"] == {"v3": "llama", "tekken": "gpt2"}[kind]
    assert metadata.get("tokenizer.ggml.pre") == {"v3": None, "tekken": "tekken"}[kind]
    assert metadata.get("tokenizer.ggml.add_space_prefix") == {
        "v3-space-true": "true", "v3-space-false": "false", "tekken": None
    }[config]  # fmt: skip


@pytest.mark.parametrize("text", PLAIN_TEXTS.values(), ids=PLAIN_TEXTS.keys())
@pytest.mark.parametrize("config", CONFIGS)
def test_plain_text_ids(config, text, vocab_llama):
    """llama.cpp matches mistral-common on plain text, except that with add_space_prefix false it does not
    add SentencePiece's "▁" dummy prefix: there the text needs a leading space to match."""
    kind = CONFIGS[config][0]
    _need(kind)
    llm = vocab_llama(config)
    expected = text_ids(kind, text)
    if config == "v3-space-false":
        assert diff(kind, expected, llama_ids(llm, text))[0][0] == "^"  # the first piece differs
        assert llama_ids(llm, " " + text) == expected
    else:
        assert llama_ids(llm, text) == expected


@pytest.mark.parametrize("kind, arch", [("v3", "llama"), ("v3", "mamba2"), ("tekken", "llama")])
def test_real_vocab_models_load_and_generate(kind, arch, gguf_file):
    """Mistral 7B v0.3-, Codestral Mamba- and Nemo-like models load, and generate no control tokens."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(gguf_file(kind, arch=arch)), n_ctx=64, n_batch=32, n_threads=1, verbose=False)
    prompt = chat_ids(kind, [{"role": "user", "content": "Hello"}])
    out = llm.create_completion(prompt, max_tokens=3, temperature=0)
    assert out["usage"]["completion_tokens"] == 3 and out["choices"][0]["finish_reason"] == "length"
    generated = list(llm.eval_tokens)[len(prompt) :]  # all but the last, which is sampled, not evaluated
    tokenizer = mistral_tokenizer(kind).instruct_tokenizer.tokenizer
    assert len(generated) == 2 and not any(tokenizer.is_special(token) for token in generated)


# --- measured: naive prompt strings tokenized by llama.cpp against mistral-common ------------------------
# (what the later issue must fix in the plugin; these tests pin today's behaviour)

ONE_TURN = [{"role": "user", "content": "Hello"}]


@pytest.mark.parametrize(
    "config, style, llama_expected",
    [
        # add_space_prefix true (or unset): llama.cpp adds "▁" (29473) after every control token followed by
        # text, so the HF-template style "[INST] Hello" gets "▁", "▁Hello"; without the space it matches.
        ("v3-space-true", "spaced", [1, 3, 29473, 23325, 4]),
        ("v3-space-true", "unspaced", [1, 3, 23325, 4]),
        ("v3-space-unset", "spaced", [1, 3, 29473, 23325, 4]),
        ("v3-space-unset", "unspaced", [1, 3, 23325, 4]),
        # add_space_prefix false: the written space is the only one; "Hello" (16998) lacks SentencePiece's "▁".
        ("v3-space-false", "spaced", [1, 3, 23325, 4]),
        ("v3-space-false", "unspaced", [1, 3, 16998, 4]),
        # tekken has no dummy prefix: " Hello" (45383) is another token than mistral-common's "Hello" (22177).
        ("tekken", "spaced", [1, 3, 45383, 4]),
        ("tekken", "unspaced", [1, 3, 22177, 4]),
    ],
)
def test_naive_one_turn_prompt(config, style, llama_expected, vocab_llama):
    """``"<s>[INST] Hello[/INST]"`` (spaced) or ``"<s>[INST]Hello[/INST]"`` against mistral-common."""
    kind = CONFIGS[config][0]
    _need(kind)
    assert chat_ids(kind, ONE_TURN) == {"v3": [1, 3, 23325, 4], "tekken": [1, 3, 22177, 4]}[kind]
    text = "<s>[INST] Hello[/INST]" if style == "spaced" else "<s>[INST]Hello[/INST]"
    assert llama_ids(vocab_llama(config), text) == llama_expected


def test_one_turn_pieces():
    _need("v3")
    assert pieces("v3", [23325, 16998, 29473]) == ["\u2581Hello", "Hello", "\u2581"]
    assert pieces("tekken", [22177, 45383]) == ["Hello", " Hello"]


def _rendered(case: str, sp: str) -> str:
    """``case`` as a naive prompt string: ``sp`` after a control token that text follows ("spaced" mimics
    SentencePiece's dummy prefix like HF's v3 template; FIM's suffix never gets one, as in mistral-common)."""
    if case == "system":
        return f"<s>[INST]{sp}Be brief.\n\nHello[/INST]"
    if case == "two-turn":
        return f"<s>[INST]{sp}Hi[/INST]{sp}Hello there</s>[INST]{sp}Bye[/INST]"
    if case == "tools":
        call = json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}])
        result = json.dumps({"content": {"temp": 21}, "call_id": "abcDEF123"})
        return (
            f"<s>[INST]{sp}Weather in Paris?[/INST][TOOL_CALLS]{sp}{call}</s>[TOOL_RESULTS]{sp}{result}"
            f"[/TOOL_RESULTS]{sp}21 degrees.</s>[AVAILABLE_TOOLS]{sp}{json.dumps(TOOLS)}[/AVAILABLE_TOOLS]"
            f"[INST]{sp}Be brief.\n\nThanks![/INST]"
        )
    return f"<s>[SUFFIX]{FIM_SUFFIX}[PREFIX]{sp}{FIM_PROMPT}"


def _reference(kind: str, case: str) -> list[int]:
    if case == "fim":
        return fim_ids(kind, FIM_PROMPT, FIM_SUFFIX)
    messages = {
        "system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "two-turn": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
                     {"role": "user", "content": "Bye"}],
        "tools": TOOL_CHAT,
    }[case]  # fmt: skip
    return chat_ids(kind, messages, TOOLS if case == "tools" else None)


SP = "\u2581"  # SentencePiece's space
# (config, case, style, diff(mistral-common's ids, llama.cpp's ids)): each difference as (the reference
# piece before it, mistral-common's pieces, llama.cpp's pieces). [] means identical ids.
NAIVE_DIFFS = [
    ("v3-space-true", "system", "spaced", [("[INST]", [], [SP])]),
    ("v3-space-true", "system", "unspaced", []),
    ("v3-space-true", "two-turn", "spaced", [("[INST]", [], [SP]), ("[/INST]", [], [SP]), ("[INST]", [], [SP])]),
    ("v3-space-true", "two-turn", "unspaced", []),
    ("v3-space-true", "tools", "spaced", [
        ("[INST]", [], [SP]), ("[TOOL_CALLS]", [], [SP]), ("[TOOL_RESULTS]", [], [SP]),
        ("[/TOOL_RESULTS]", [SP], [SP * 2]), ("[AVAILABLE_TOOLS]", [], [SP]), ("[INST]", [], [SP]),
    ]),
    ("v3-space-true", "tools", "unspaced", []),
    # no string gives the FIM ids here: the suffix must not start with "▁", llama.cpp always adds one
    ("v3-space-true", "fim", "spaced", [("[SUFFIX]", [], [SP]), ("[PREFIX]", [], [SP])]),
    ("v3-space-true", "fim", "unspaced", [("[SUFFIX]", [], [SP])]),
    ("v3-space-false", "system", "spaced", []),
    ("v3-space-false", "system", "unspaced", [("[INST]", [SP + "Be"], ["Be"])]),
    ("v3-space-false", "two-turn", "spaced", []),
    ("v3-space-false", "two-turn", "unspaced", [
        ("[INST]", [SP + "Hi"], ["Hi"]), ("[/INST]", [SP + "Hello"], ["Hello"]), ("[INST]", [SP + "By"], ["By"]),
    ]),
    ("v3-space-false", "tools", "spaced", []),
    ("v3-space-false", "tools", "unspaced", [
        ("[INST]", [SP + "We"], ["We"]), ("[TOOL_CALLS]", [SP + "["], ["["]), ("[TOOL_RESULTS]", [SP + '{"'], ['{"']),
        ("[/TOOL_RESULTS]", [SP], []), ("[AVAILABLE_TOOLS]", [SP + "["], ["["]), ("[INST]", [SP + "Be"], ["Be"]),
    ]),
    ("v3-space-false", "fim", "spaced", []),
    ("v3-space-false", "fim", "unspaced", [("[PREFIX]", [SP + "def"], ["def"])]),
    ("tekken", "system", "spaced", [("[INST]", ["Be"], [" Be"])]),
    ("tekken", "system", "unspaced", []),
    ("tekken", "two-turn", "spaced", [
        ("[INST]", ["Hi"], [" Hi"]), ("[/INST]", ["Hello"], [" Hello"]), ("[INST]", ["By", "e"], [" Bye"]),
    ]),
    ("tekken", "two-turn", "unspaced", []),
    ("tekken", "tools", "spaced", [
        ("[INST]", ["Weather"], [" Weather"]), ("[TOOL_CALLS]", ["["], [" ["]), ("[TOOL_RESULTS]", ['{"'], [' {"']),
        ("[/TOOL_RESULTS]", [], [" "]), ("[AVAILABLE_TOOLS]", ["["], [" ["]), ("[INST]", ["Be"], [" Be"]),
    ]),
    ("tekken", "tools", "unspaced", []),
    ("tekken", "fim", "spaced", [("[PREFIX]", ["def"], [" def"])]),
    ("tekken", "fim", "unspaced", []),
]  # fmt: skip


@pytest.mark.parametrize(
    "config, case, style, expected_diff",
    [pytest.param(*row, id=f"{row[0]}-{row[1]}-{row[2]}") for row in NAIVE_DIFFS],
)
def test_naive_prompt_strings(config, case, style, expected_diff, vocab_llama):
    kind = CONFIGS[config][0]
    _need(kind)
    text = _rendered(case, " " if style == "spaced" else "")
    assert diff(kind, _reference(kind, case), llama_ids(vocab_llama(config), text)) == expected_diff
