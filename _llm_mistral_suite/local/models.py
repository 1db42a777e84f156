"""Local GGUF models as llm models: chat (and FIM with ``-o suffix``) and embeddings, run by llama.cpp."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import llm

from ..errors import MistralSuiteError, not_utf8
from ..options import LOCAL_DEFAULT_MAX_TOKENS, OptionsFor
from .registry import LocalModelInfo

if TYPE_CHECKING:
    from .runtime import LoadedLlama

# What mtmd's image reader (stb_image) decodes: the attachment types of a model with an image projector.
LOCAL_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/bmp"})


class _LocalChatBase:
    """What the sync and async local chat models share: everything but how ``run`` is driven."""

    can_stream = True
    supports_schema = True
    supports_tools = True
    attachment_types: frozenset[str] = frozenset()
    needs_key = None
    Options = OptionsFor("LocalOptions")

    def __init__(self, info: LocalModelInfo) -> None:
        self.info = info
        self.model_id = info.model_id
        self.attachment_types = LOCAL_IMAGE_TYPES if info.mmproj else frozenset()

    def __str__(self) -> str:
        return f"Mistral local (llama.cpp): {self.model_id}"

    def _validate_attachments(self, attachments: Any = None) -> None:
        """llm's check, with what to do when the model has no image projector."""
        if attachments and not self.info.mmproj:
            raise MistralSuiteError(
                f"{self.model_id} takes no images: register its multimodal projector with `llm mistral local add "
                f"{self.info.path} --name {self.info.name} --mmproj mmproj-FILE.gguf` (or download a vision model: "
                "llm mistral local download pixtral-12b).")
        super()._validate_attachments(attachments)  # type: ignore[misc]

    def run(self, prompt: llm.Prompt, stream: bool, response: Any) -> Iterator[Any]:
        """The reply as llm events; runs llama.cpp in the calling thread."""
        # imported here: registering the models (every `llm` command that looks one up) needs none of this
        from llm.parts import StreamEvent

        from ..wire import refuse_nothing_to_answer, tool_definitions, wire_tool_call_id
        from .generate import Completion, ReplyReader, Sampling, context_error, sample
        from .prompt import REPLAY_KEY, ImageSlot, Turn, local_turns
        from .runtime import clear_llama_errors, load_local_llama
        from .tools import parse_calls
        from .vision import evaluate_with_images

        options = prompt.options
        fim = options.suffix is not None  # fill in the middle: a completion from hand-built tokens
        if fim and (prompt.system or prompt.schema or prompt.tools):
            raise MistralSuiteError("Fill-in-the-middle takes no system prompt, schema or tools: pass the code "
                                    "before the gap only.")
        tools = tool_definitions(prompt)
        if options.tool_choice and not tools:
            raise MistralSuiteError("-o tool_choice needs tools: give them with -T/--functions.")
        turns = None if fim else local_turns(prompt.messages, wire_tool_call_id)
        if turns is not None:  # nothing to answer is refused before the model loads, which can take seconds
            last = turns[-1] if turns else Turn("system")
            refuse_nothing_to_answer(last.role, bool(last.text.strip() or last.images))
        loaded = load_local_llama(self.info.path, n_ctx=options.n_ctx, n_gpu_layers=options.n_gpu_layers,
                                  n_threads=options.n_threads, verbose=bool(options.verbose))
        try:
            ids, described = self._prompt_ids(prompt, loaded, tools, turns)
        except MistralSuiteError:
            raise
        except Exception as exc:  # a chat template that rejects the conversation
            raise self._explain_failure(exc) from None
        vocab = loaded.vocab
        sampling = Sampling(
            max_tokens=options.max_tokens or LOCAL_DEFAULT_MAX_TOKENS,
            seed=options.seed if options.seed is not None else random.getrandbits(31),
            **{name: getattr(options, name) for name in ("temperature", "top_p", "top_k", "min_p")
               if getattr(options, name) is not None},
            stop=tuple([options.stop] if isinstance(options.stop, str) else options.stop or ()),
        )
        grammar = self._grammar(prompt, loaded, tools)
        if options.verbose and (loaded.dialect is not None or fim):
            self._show_prompt(ids, described, vocab)
        reader = ReplyReader(vocab, sampling.stop)
        images = any(isinstance(item, ImageSlot) for item in ids)
        with loaded.lock:
            clear_llama_errors()
            try:
                evaluated = 0
                if images:  # evaluated here, image by image; llama.cpp then finds the whole prompt in its cache
                    ids = evaluate_with_images(loaded, ids, self.info.mmproj or "", self.model_id,
                                               lambda tokens: context_error(loaded, self.model_id, tokens))
                    evaluated = len(ids)
                completion = Completion(len(ids))
                yield from sample(loaded, self.model_id, ids, sampling, reader, completion, grammar=grammar,
                                  evaluated_before=evaluated)
            except MistralSuiteError:
                raise
            except Exception as exc:
                raise self._explain_failure(exc) from None
        finish_reason = completion.finish_reason
        if reader.calls:
            if finish_reason == "length":
                raise MistralSuiteError(
                    f"{self.model_id} reached max_tokens ({sampling.max_tokens}) in the middle of a tool call; "
                    "raise -o max_tokens.")
            for call in parse_calls(reader.calls, self.model_id, {tool["function"]["name"] for tool in tools}):
                yield StreamEvent(type="tool_call_name", chunk=call.name, tool_call_id=call.id, tool_name=call.name)
                yield StreamEvent(type="tool_call_args", chunk=json.dumps(call.arguments), tool_call_id=call.id)
                response.add_tool_call(llm.ToolCall(name=call.name, arguments=call.arguments, tool_call_id=call.id))
            finish_reason = "tool_calls"
        elif completion.sampled and not reader.stopped and not fim and loaded.dialect is not None:
            # the sampled ids, so that the next turn extends exactly what llama.cpp evaluated (see prompt.py)
            yield StreamEvent(type="text", chunk="", provider_metadata={
                REPLAY_KEY: {"vocab": vocab.fingerprint, "tokens": completion.sampled}})
        cached = completion.cached
        response.set_usage(input=completion.prompt_tokens, output=len(completion.sampled),
                           details={"cached_tokens": cached} if cached else None)
        response.response_json = {"finish_reason": finish_reason, "prompt_format": described,
                                  **({} if fim else self._template_facts(loaded)), "n_ctx": loaded.settings[2]}

    def _grammar(self, prompt: llm.Prompt, loaded: LoadedLlama, tools: list[dict[str, Any]]) -> str | None:
        """The llama.cpp grammar the reply must follow: the schema's, or the one enforcing ``tool_choice``."""
        if prompt.schema:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                return json_schema_to_gbnf(json.dumps(prompt.schema))
            except Exception as exc:  # a schema feature llama.cpp's converter lacks
                raise MistralSuiteError(f"The schema cannot be enforced on {self.model_id} (llama.cpp's grammar "
                                        f"converter: {exc or type(exc).__name__}).") from None
        if not tools or loaded.dialect is None:
            return None
        from .tools import tool_grammar

        # a forced choice applies to the reply to the user; the reply to tool results is free, so a chain ends
        choice = prompt.options.tool_choice
        if prompt.messages and prompt.messages[-1].role == "tool" and choice != "none":
            choice = None
        return tool_grammar(choice, tools, loaded.dialect, loaded.vocab, self.model_id)

    @staticmethod
    def _show_prompt(ids: list[Any], described: str, vocab: Any) -> None:
        """``-o verbose 1``: the prompt as llama.cpp gets it, on stderr."""
        import sys

        from .prompt import ImageSlot

        images = sum(isinstance(item, ImageSlot) for item in ids)
        counted = f"{len(ids) - images} tokens" + (f" and {images} image{'s' if images > 1 else ''}" if images else "")
        sys.stderr.write(f"--- prompt: {counted}, {described} ---\n{vocab.show(ids)}\n---\n")

    def _prompt_ids(self, prompt: llm.Prompt, loaded: LoadedLlama, tools: list[dict[str, Any]],
                    turns: list[Any] | None) -> tuple[list[Any], str]:
        """The prompt's token ids, and what built them; ``turns``: the conversation's (None: fill in the middle)."""
        from ..wire import chat_messages
        from .prompt import encode_chat, encode_fim

        if turns is None:
            return encode_fim(loaded.vocab, self.model_id, prompt.prompt or "", prompt.options.suffix), "fill-in-the-middle"
        if loaded.dialect is not None:
            return (encode_chat(turns, tools, loaded.dialect, loaded.vocab, self.model_id),
                    f"Mistral {loaded.dialect.version} instruct format, as mistral-common encodes it")
        if tools:
            raise MistralSuiteError(f"{self.model_id} cannot use tools: its vocabulary has no Mistral control "
                                    "tokens ([INST], [TOOL_CALLS]) and its chat template no Mistral tool format.")
        if prompt.attachments:
            raise MistralSuiteError(f"{self.model_id} takes no attachments.")
        text = loaded.formatter(messages=chat_messages(prompt, thinking=False)).prompt
        return loaded.llama.tokenize(text.encode(), add_bos=False, special=True), "the GGUF's chat template as text"

    @staticmethod
    def _template_facts(loaded: LoadedLlama) -> dict[str, Any]:
        formatter, dialect = loaded.formatter, loaded.dialect
        if dialect is not None:
            placement = "system tokens" if dialect.system_tokens else "last-user"
        else:
            placement = formatter.system_placement if formatter else None
        return {"chat_template": formatter.template_source if formatter else None, "system_prompt": placement}

    def _explain_failure(self, exc: Exception) -> MistralSuiteError:
        if isinstance(exc, UnicodeEncodeError) and isinstance(exc.object, str):
            return MistralSuiteError(f"The prompt {not_utf8(exc.object)}")
        import jinja2

        from .runtime import last_llama_error

        text = str(exc)
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
        from .runtime import clear_llama_errors, last_llama_error, load_local_llama

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
