"""One local completion: llama.cpp's sampled tokens read as text, reasoning and tool calls, with stop strings and limits."""

from __future__ import annotations

import codecs
from typing import Any, Iterator, NamedTuple, Union

from llm.parts import StreamEvent

from ..errors import MistralSuiteError
from .tools import CallText
from .vocab import PromptVocab


class Sampling(NamedTuple):
    """How to sample: llama-cpp-python's chat defaults where the user set nothing."""

    max_tokens: int
    seed: int
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    stop: tuple[str, ...] = ()


class ReplyReader:
    """Turns sampled tokens into llm events as they arrive.

    Text is decoded incrementally (a character split over byte tokens waits for its last byte) and held back
    while it could be the start of a stop string; as SentencePiece decodes, the reply's first "▁" is no space. ``[THINK]``...``[/THINK]`` becomes reasoning; what follows
    ``[TOOL_CALLS]`` is collected as tool calls (``calls``), read once the reply is complete.
    """

    def __init__(self, vocab: PromptVocab, stop: tuple[str, ...] = ()) -> None:
        self.vocab = vocab
        self.names = {token: name for name, token in vocab.markers.items()}
        self.stop = tuple(s for s in stop if s)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.state = "text"  # or "think", "call"
        self.held = ""  # text not yet shown: it may begin a stop string
        self.text = self.reasoning = ""
        self.calls: list[CallText] = []
        self.stopped = False  # a stop string ended the reply
        self.started = False  # some text has been read

    def feed(self, token: int) -> list[Union[str, StreamEvent]]:
        name = self.names.get(token)
        if name is not None:
            out = self._flush_decoder()
            if name == "[THINK]" and self.state == "text":
                self.state = "think"
            elif name == "[/THINK]" and self.state == "think":
                self.state = "text"
            elif name == "[TOOL_CALLS]":
                out += self._release()
                self.state = "call"
                self.calls.append(CallText())
            elif self.state == "call" and name in ("[ARGS]", "[CALL_ID]"):
                self.calls[-1].part = "args" if name == "[ARGS]" else "id"
            return out
        return self._take(self.decoder.decode(self.vocab.piece(token)))

    def close(self) -> list[Union[str, StreamEvent]]:
        """The rest of the reply: bytes still being decoded and text held back for the stop strings."""
        out = self._take(self.decoder.decode(b"", final=True))
        return out + self._release()

    def _flush_decoder(self) -> list[Union[str, StreamEvent]]:
        pending = self.decoder.decode(b"", final=True)
        self.decoder.reset()
        return self._take(pending) if pending else []

    def _take(self, text: str) -> list[Union[str, StreamEvent]]:
        if not text or self.stopped:
            return []
        if self.state == "think":
            self.reasoning += text
            return [StreamEvent(type="reasoning", chunk=text)]
        if self.state == "call":
            self.calls[-1].add(text)
            return []
        if not self.started:
            self.started = True
            if self.vocab.spm and text.startswith(" "):
                text = text[1:]
        self.held += text
        for stop in self.stop:
            at = self.held.find(stop)
            if at >= 0:
                self.held = self.held[:at]
                self.stopped = True
                return self._release()
        keep = max((n for stop in self.stop for n in range(1, len(stop)) if self.held.endswith(stop[:n])), default=0)
        shown, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep:]
        self.text += shown
        return [shown] if shown else []

    def _release(self) -> list[Union[str, StreamEvent]]:
        shown, self.held = self.held, ""
        self.text += shown
        return [shown] if shown else []


class Completion:
    """What one completion cost and how it ended."""

    __slots__ = ("prompt_tokens", "evaluated", "sampled", "finish_reason")

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.evaluated = prompt_tokens  # prompt tokens llama.cpp really read (the rest came from its cache)
        self.sampled: list[int] = []  # generated tokens, end-of-generation token excluded
        self.finish_reason = "length"

    @property
    def cached(self) -> int:
        return max(0, self.prompt_tokens - self.evaluated)


def sample(loaded: Any, model_id: str, prompt: list[int], sampling: Sampling, reader: ReplyReader,
           completion: Completion, *, grammar: str | None = None, evaluated_before: int = 0) -> Iterator[Union[str, StreamEvent]]:
    """Generate after ``prompt`` (already evaluated up to its common prefix by llama.cpp itself), feeding
    ``reader``; ``completion`` records the ending, the sampled tokens and how much of the prompt was read.

    ``evaluated_before``: prompt tokens already evaluated by the caller (image prompts)."""
    import llama_cpp

    llama = loaded.llama
    n_ctx = llama.n_ctx()
    room = n_ctx - completion.prompt_tokens
    if room <= 0:
        raise context_error(loaded, model_id, completion.prompt_tokens)
    limit = min(sampling.max_tokens, room)
    llama.set_seed(sampling.seed)
    compiled = None
    if grammar is not None:
        compiled = llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
    vocab = llama._model.vocab
    meter = loaded.meter
    meter.count = 0
    first = True
    for token in llama.generate(prompt, top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
                                temp=sampling.temperature, repeat_penalty=1.0, grammar=compiled):
        if first:  # everything llama.cpp evaluated before the first sample was (the new part of) the prompt
            completion.evaluated = evaluated_before + meter.count
            first = False
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            completion.finish_reason = "stop"
            break
        completion.sampled.append(token)
        yield from reader.feed(token)
        if reader.stopped:
            completion.finish_reason = "stop"
            break
        if len(completion.sampled) >= limit:
            break
    yield from reader.close()


def context_error(loaded: Any, model_id: str, prompt_tokens: int) -> MistralSuiteError:
    """The prompt does not fit: say by how much and what to do."""
    n_ctx, trained = loaded.settings[2], loaded.settings[3]
    hint = (f"raise it with -o n_ctx N (this model was trained for up to {trained} tokens)"
            if trained > n_ctx else "shorten it")
    return MistralSuiteError(f"The prompt is {prompt_tokens} tokens, more than the context window of {n_ctx} tokens "
                             f"of {model_id}. Start a new conversation or {hint}.")
