"""A loaded GGUF's vocabulary as mistral-common uses it: Mistral's control tokens by name, text tokenized its way."""

from __future__ import annotations

import hashlib
from typing import Any

# The control tokens of Mistral's instruct formats (v3 SentencePiece and tekken vocabularies; not all have all).
MISTRAL_MARKERS = (
    "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CONTENT]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[ARGS]", "[CALL_ID]", "[THINK]",
    "[/THINK]", "[PREFIX]", "[SUFFIX]", "[MIDDLE]", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
)  # fmt: skip
# "☺" is mistral-common's way of tokenizing text without SentencePiece's dummy prefix; "\n" the fallback
_INFILL_SENTINELS = ("\u263a", "\n")


class MarkerSet:
    """Which of Mistral's control tokens (``MISTRAL_MARKERS``) a vocabulary has, by id: what ``read_dialect``
    decides a model's format and tools on. ``PromptVocab`` finds them in a loaded model; a GGUF header gives
    them without loading one (``read_gguf_info``'s ``control_tokens``, for `llm mistral local list`)."""

    __slots__ = ("markers",)

    def __init__(self, markers: dict[str, int]) -> None:
        self.markers = markers

    @property
    def mistral_instruct(self) -> bool:
        """Whether ``[INST]``/``[/INST]`` are control tokens: Mistral's v2 and later instruct formats."""
        return "[INST]" in self.markers and "[/INST]" in self.markers

    def has(self, *names: str) -> bool:
        return all(name in self.markers for name in names)

    def marker(self, name: str) -> int:
        return self.markers[name]


class PromptVocab(MarkerSet):
    """What building a prompt needs from a ``Llama``'s vocabulary.

    mistral-common encodes each text piece between control tokens on its own: SentencePiece (v3) adds its
    "▁" dummy prefix to every piece, tekken adds nothing. llama.cpp adds that prefix only where the GGUF's
    ``tokenizer.ggml.add_space_prefix`` (default true) says so, and, on a whole rendered prompt, also after
    every control token. ``text`` tokenizes one piece exactly as mistral-common does, whatever the setting.
    """

    __slots__ = ("llama", "spm", "dummy_prefix", "bos", "eos", "fingerprint", "n_vocab")

    def __init__(self, llama: Any) -> None:
        import llama_cpp

        self.llama = llama
        vocab = llama._model.vocab
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.spm = llama_cpp.llama_vocab_type(vocab) == llama_cpp.LLAMA_VOCAB_TYPE_SPM
        # llama.cpp adds "▁" itself unless the GGUF says not to (llama-cpp-python reads the key the same way)
        self.dummy_prefix = self.spm and llama.metadata.get("tokenizer.ggml.add_space_prefix", "true") == "true"
        self.bos, self.eos = llama.token_bos(), llama.token_eos()
        structural = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        super().__init__({})
        for name in MISTRAL_MARKERS:
            ids = llama.tokenize(name.encode(), add_bos=False, special=True)
            if len(ids) == 1 and llama_cpp.llama_vocab_get_attr(vocab, ids[0]) & structural:
                self.markers[name] = ids[0]
        # which vocabulary a reply's kept token ids belong to: its size, kind and a sample of its token texts
        sample = [*range(0, self.n_vocab, max(1, self.n_vocab // 97)), *self.markers.values(), self.bos, self.eos]
        digest = hashlib.sha256(repr((self.n_vocab, self.spm)).encode())
        for token in sample:
            digest.update(llama_cpp.llama_vocab_get_text(vocab, token) if 0 <= token < self.n_vocab else b"-")
        self.fingerprint = digest.hexdigest()[:16]

    def text(self, text: str) -> list[int]:
        """``text`` as mistral-common's ``tokenizer.encode(text, bos=False, eos=False)`` gives it."""
        if not text:
            return []
        data = text.encode()
        if self.spm and not self.dummy_prefix:
            data = b" " + data
        return self.llama.tokenize(data, add_bos=False, special=False)

    def infill(self, text: str) -> list[int]:
        """``text`` without SentencePiece's dummy prefix, as mistral-common tokenizes a FIM suffix: "☺" + text,
        then the sentinel's own tokens dropped. Should the sentinel merge with the text, a newline (which
        SentencePiece never merges with what follows) serves instead."""
        if not text:
            return []
        for sentinel in _INFILL_SENTINELS:
            ids = self.text(sentinel + text)[len(self.text(sentinel)):]
            if self.decode(ids) == text:
                return ids
        return self.text(text)

    def decode(self, ids: list[int], *, special: bool = False) -> str:
        """The text of ``ids``, piece by piece (no leading space removed); control tokens only if ``special``."""
        return b"".join(self.piece(i, special) for i in ids).decode("utf-8", "replace")

    def reply_text(self, ids: list[int]) -> str:
        """What a reply of ``ids`` reads as: its text without the "▁" SentencePiece puts before the first word."""
        text = self.decode(ids)
        return text[1:] if self.spm and text.startswith(" ") else text

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (a partial UTF-8 sequence for byte tokens)."""
        import ctypes

        import llama_cpp

        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.llama._model.vocab, token, buffer, size, 0, special)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    def show(self, ids: list[Any]) -> str:
        """A prompt's ids as it reads: control tokens by name, text as text, "<image>" for each image."""
        parts: list[str] = []
        run: list[int] = []
        for item in [*ids, None]:
            if isinstance(item, int):
                run.append(item)
                continue
            parts.append(self.decode(run, special=True))
            run = []
            if item is not None:
                parts.append("<image>")
        return "".join(parts)
