"""Local GGUF models as llm models: chat (and FIM with ``-o suffix``) and embeddings, run by llama.cpp."""

from __future__ import annotations

import random
import re
from typing import Any, Iterable, Iterator

import llm

from ..errors import MistralSuiteError, not_utf8
from ..options import LOCAL_DEFAULT_MAX_TOKENS, OptionsFor
from ..wire import ReplyDecoder, chat_messages
from .registry import LocalModelInfo
from .runtime import LoadedLlama, clear_llama_errors, last_llama_error, load_local_llama
from .template import local_fim_tokens


class _LocalChatBase:
    """What the sync and async local chat models share: everything but how ``run`` is driven."""

    can_stream = True
    supports_schema = True
    supports_tools = False
    attachment_types: frozenset[str] = frozenset()
    needs_key = None
    Options = OptionsFor("LocalOptions")

    def __init__(self, info: LocalModelInfo) -> None:
        self.info = info
        self.model_id = info.model_id

    def __str__(self) -> str:
        return f"Mistral local (llama.cpp): {self.model_id}"

    def run(self, prompt: llm.Prompt, stream: bool, response: Any) -> Iterator[Any]:
        """The reply as llm events; runs llama.cpp in the calling thread."""
        options = prompt.options
        fim = options.suffix is not None  # fill in the middle: a completion from hand-built tokens
        if fim and (prompt.system or prompt.schema):
            raise MistralSuiteError("Fill-in-the-middle takes no system prompt or schema: pass the code before the gap only.")
        loaded = load_local_llama(self.info.path, n_ctx=options.n_ctx, n_gpu_layers=options.n_gpu_layers,
                                  n_threads=options.n_threads, verbose=bool(options.verbose))
        kwargs: dict[str, Any] = {
            "stream": stream,
            "max_tokens": options.max_tokens or LOCAL_DEFAULT_MAX_TOKENS,
            "model": self.model_id,
            "seed": options.seed if options.seed is not None else random.getrandbits(31),
        }
        for name in ("temperature", "top_p", "top_k", "min_p", "stop"):
            value = getattr(options, name)
            if value is not None:
                kwargs[name] = value
        if fim:
            kwargs["prompt"] = local_fim_tokens(loaded.llama, self.model_id, prompt.prompt or "", options.suffix)
            kwargs.setdefault("temperature", 0.2)  # the documented default, as in chat (create_completion's is 0.8)
        else:
            kwargs["messages"] = chat_messages(prompt, thinking=False)
        if prompt.schema:
            kwargs["response_format"] = {"type": "json_object", "schema": prompt.schema}
        decoder = ReplyDecoder(f"llama.cpp ({self.model_id})")
        with loaded.lock:
            clear_llama_errors()
            try:
                create = loaded.llama.create_completion if fim else loaded.llama.create_chat_completion
                result = create(**kwargs)
                yield from decoder.events(result if stream else (result,))
            except MistralSuiteError:
                raise
            except Exception as exc:
                raise self._explain_failure(exc, loaded) from None
            meter, formatter = loaded.meter, loaded.formatter
            yield from decoder.finish(response, self.model_id)
            if meter is not None:
                response.set_usage(input=meter.prompt_tokens, output=meter.generated,
                                   details={"cached_tokens": meter.cached} if meter.cached else None)
            response.response_json = {
                **(response.response_json or {}),
                **({} if fim else {"chat_template": formatter.template_source if formatter else None,
                                   "system_prompt": formatter.system_placement if formatter else None}),
                "n_ctx": loaded.settings[2],
            }

    def _explain_failure(self, exc: Exception, loaded: LoadedLlama) -> MistralSuiteError:
        if isinstance(exc, UnicodeEncodeError) and isinstance(exc.object, str):
            return MistralSuiteError(f"The prompt {not_utf8(exc.object)}")
        text = str(exc)
        found = re.search(r"Requested tokens \((\d+)\) exceed context window of (\d+)", text)
        if found:
            n_ctx, trained = loaded.settings[2], loaded.settings[3]
            raise_hint = (f"raise it with -o n_ctx N (this model was trained for up to {trained} tokens)"
                          if trained > n_ctx else "shorten it")
            return MistralSuiteError(
                f"The prompt is {found.group(1)} tokens, more than the context window of {n_ctx} tokens of "
                f"{self.model_id}. Start a new conversation or {raise_hint}."
            )
        import jinja2

        if isinstance(exc, jinja2.TemplateError) or (isinstance(exc, ValueError) and "role" in text.lower()):
            return MistralSuiteError(f"The chat template of {self.model_id} rejected the conversation: {text}")
        detail = last_llama_error()
        return MistralSuiteError(f"llama.cpp failed on {self.model_id}: {text or type(exc).__name__}"
                                 + (f" ({detail})" if detail and detail not in text else ""))


class LocalChat(_LocalChatBase, llm.Model):
    """A GGUF chat model run in this process by llama.cpp."""

    def execute(self, prompt, stream, response, conversation):  # type: ignore[override]
        yield from self.run(prompt, stream, response)


class AsyncLocalChat(_LocalChatBase, llm.AsyncModel):
    """Async twin of ``LocalChat``: llama.cpp runs in a worker thread, one step per event."""

    async def execute(self, prompt, stream, response, conversation):  # type: ignore[override]
        import asyncio

        events = self.run(prompt, stream, response)
        done = object()
        try:
            while True:
                event = await asyncio.to_thread(next, events, done)
                if event is done:
                    break
                yield event
        finally:
            events.close()


class LocalEmbedding(llm.EmbeddingModel):
    """A GGUF embedding model (mean pooling: one vector per input)."""

    supports_text = True
    supports_binary = False
    batch_size = 32
    needs_key = None

    def __init__(self, info: LocalModelInfo) -> None:
        self.info = info
        self.model_id = info.model_id

    def embed_batch(self, items: Iterable[Any]) -> Iterator[list[float]]:
        loaded = load_local_llama(self.info.path, embedding=True)
        texts = [item if isinstance(item, str) else bytes(item).decode("utf-8", "replace") for item in items]
        with loaded.lock:
            clear_llama_errors()
            try:
                vectors = loaded.llama.embed(texts)
            except Exception as exc:
                if isinstance(exc, UnicodeEncodeError) and isinstance(exc.object, str):
                    raise MistralSuiteError(f"The text to embed {not_utf8(exc.object)}") from None
                detail = last_llama_error()
                raise MistralSuiteError(f"llama.cpp could not embed with {self.model_id}: {exc}"
                                        + (f" ({detail})" if detail else "")) from None
        return iter([list(map(float, vector)) for vector in vectors])
