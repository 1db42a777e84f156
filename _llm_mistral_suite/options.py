"""The ``-o`` options of each model kind: pydantic classes built on first use, each option sent only when set."""

from __future__ import annotations

import functools
import json
from typing import Any, Literal, Optional, Union

import llm

LOCAL_DEFAULT_MAX_TOKENS = 512
LOCAL_MAX_DEFAULT_CTX = 8192  # default n_ctx: the model's own context, capped (KV cache memory)

PASS_THROUGH_OPTIONS = (  # MistralOptions sent to the API as they are
    "temperature", "top_p", "max_tokens", "stop", "random_seed", "presence_penalty", "frequency_penalty",
    "safe_prompt", "reasoning_effort", "service_tier", "guardrails",
)
PROMPT_CACHE_OFF = "none"  # -o prompt_cache_key none: send no key, not even the conversation's id
GUARDRAIL_KEYS = frozenset({"block_on_error", "moderation_llm_v1", "moderation_llm_v2"})  # GuardrailConfig


class OptionsFor:
    """A model class's ``Options``: the named class of ``option_classes()``, built when llm first asks for it.

    Building pydantic classes costs milliseconds, and every `llm` command that looks a model up registers
    all of ours; only a prompt or ``llm models --options`` needs the options. A model instance whose
    ``options_name`` is set gets that class instead (its kind decides: reasoning models take more).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type) -> type[llm.Options]:
        return option_classes()[getattr(instance, "options_name", None) or self.name]


OPTION_CLASSES = (
    "OptionsBase", "MistralOptions", "MistralReasoningOptions", "FIMOptions", "ServerOptions", "LocalOptions",
    "TranscribeOptions",
)


def __getattr__(name: str) -> type[llm.Options]:
    """``from _llm_mistral_suite.options import MistralOptions`` builds the classes too (and nothing else
    does: the import system asks modules for ``__path__`` and such)."""
    if name not in OPTION_CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return option_classes()[name]


def _json_list_or_str(value: Any) -> Any:
    """``-o stop '["a", "b"]'`` arrives as a string: accept a JSON list of strings there. A value that opens
    like one (``["``) but is not one is an error, never sent as a literal stop string; ``[INST]`` stays a string."""
    if isinstance(value, list):
        parsed: Any = value
    elif isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            if value.lstrip()[1:].lstrip()[:1] in ('"', "]"):
                raise ValueError(f"{value!r} is not a valid JSON list; write it as '[\"a\", \"b\"]'") from None
            return value
        if not isinstance(parsed, list):
            return value
    else:
        return value
    if not parsed or not all(isinstance(item, str) and item for item in parsed):
        itself = f"; to stop at the text {value} itself, write {json.dumps([value])}" if isinstance(value, str) else ""
        raise ValueError(f"a list of stop sequences must hold non-empty strings, such as [\"a\", \"b\"]{itself}")
    return parsed


@functools.cache
def option_classes() -> dict[str, type[llm.Options]]:
    """Every options class by name, built once."""
    from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
    from pydantic_core import InitErrorDetails, PydanticCustomError

    class OptionsBase(llm.Options):
        """llm options whose validator is built on first use (building it at import would cost every
        `llm` command milliseconds), with the ``stop`` option every model here takes."""

        model_config = ConfigDict(defer_build=True, extra="forbid")

        stop: Optional[Union[str, list[str]]] = Field(None, description="Stop sequence, or a JSON list of them")

        @field_validator("stop", mode="before")
        @classmethod
        def _stop_list(cls, value: Any) -> Any:
            return _json_list_or_str(value)

    class MistralOptions(OptionsBase):
        """Options of Mistral's chat API; each is sent only when set."""

        @model_validator(mode="before")
        @classmethod
        def _legacy_names(cls, values: Any) -> Any:
            """Say why a non-reasoning model refuses ``reasoning_effort``. And llm-mistral before 0.16 called
            safe_prompt ``safe_mode`` and logged it with every prompt: `llm -c` validates those options again."""
            if isinstance(values, dict) and "reasoning_effort" in values and "reasoning_effort" not in cls.model_fields:
                raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                    type=PydanticCustomError("reasoning_models_only", "works only with reasoning models, such as "
                                             "magistral-medium (`llm models --options` lists each model's)"),
                    loc=("reasoning_effort",), input=values["reasoning_effort"])])
            if isinstance(values, dict) and "safe_mode" in values:
                values = dict(values)
                safe_mode = values.pop("safe_mode")
                values.setdefault("safe_prompt", safe_mode)
            return values

        temperature: Optional[float] = Field(None, ge=0, le=1.5, description="Sampling temperature, 0 to 1.5")
        top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling probability mass, (0, 1]")
        max_tokens: Optional[int] = Field(None, ge=1, description="Maximum number of tokens to generate")
        random_seed: Optional[int] = Field(None, ge=0, description="Seed for deterministic sampling")
        presence_penalty: Optional[float] = Field(None, ge=-2, le=2, description="Penalty for tokens already present")
        frequency_penalty: Optional[float] = Field(None, ge=-2, le=2, description="Penalty by token frequency")
        safe_prompt: Optional[bool] = Field(None, description="Inject Mistral's safety system prompt")
        prefix: Optional[str] = Field(None, description="Start the answer with this text (assistant prefix)")
        prediction: Optional[str] = Field(None, description="Expected output, to speed up near-identical rewrites")
        tool_choice: Optional[str] = Field(
            None, description="auto, none, any, required, or the name of one tool the model must call"
        )
        prompt_cache_key: Optional[str] = Field(
            None, description="Key of Mistral's prompt cache (cached prompt tokens are billed less); default: "
            "the conversation's id; none: send no key"
        )
        service_tier: Optional[Literal["auto", "standard_only"]] = Field(
            None, description="auto (priority capacity when your plan has it) or standard_only"
        )
        guardrails: Optional[list[dict[str, Any]]] = Field(
            None, description='Moderation guardrails, JSON: \'[{"moderation_llm_v2": {"action": "block"}}]\''
        )

        @field_validator("prompt_cache_key", mode="before")
        @classmethod
        def _cache_key(cls, value: Any) -> Any:
            return PROMPT_CACHE_OFF if isinstance(value, str) and value.strip().lower() in ("", "none") else value

        @field_validator("guardrails", mode="before")
        @classmethod
        def _guardrails(cls, value: Any) -> Any:
            """``-o guardrails`` arrives as a string: a JSON guardrail object or a list of them."""
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise PydanticCustomError("guardrails_json", "must be JSON: a guardrail object or a list of them "
                                              """('{"moderation_llm_v2": {"action": "block"}}')""") from None
            if isinstance(value, dict):
                value = [value]
            for item in value if isinstance(value, list) else ():
                unknown = set(item) - GUARDRAIL_KEYS if isinstance(item, dict) else set()
                if unknown:
                    raise PydanticCustomError("guardrails_keys", f"unknown guardrail setting {sorted(unknown)[0]!r}; "
                                              "a guardrail takes " + ", ".join(sorted(GUARDRAIL_KEYS)))
            return value

    class MistralReasoningOptions(MistralOptions):
        """Options of Mistral's reasoning models (magistral): the chat options and how much to think."""

        reasoning_effort: Optional[Literal["none", "minimal", "low", "medium", "high", "xhigh"]] = Field(
            None, description="How much the model thinks: none, minimal, low, medium, high or xhigh"
        )

    class FIMOptions(OptionsBase):
        """Options of ``POST /v1/fim/completions``; each is sent only when set."""

        suffix: Optional[str] = Field(None, description="The code after the gap")
        model: Optional[str] = Field(None, description="A FIM-capable model: codestral-latest (default) or a dated version")
        max_tokens: Optional[int] = Field(None, ge=1, description="Maximum number of tokens to generate")
        min_tokens: Optional[int] = Field(None, ge=0, description="Minimum number of tokens to generate")
        temperature: Optional[float] = Field(None, ge=0, le=1.5, description="Sampling temperature, 0 to 1.5")
        top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling probability mass, (0, 1]")
        random_seed: Optional[int] = Field(None, ge=0, description="Seed for deterministic sampling")

    class ServerOptions(OptionsBase):
        """Sampling options every OpenAI-compatible server takes; each is sent only when set."""

        temperature: Optional[float] = Field(None, ge=0, le=2, description="Sampling temperature, 0 to 2")
        top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling probability mass, (0, 1]")
        max_tokens: Optional[int] = Field(None, ge=1, description="Maximum number of tokens to generate")
        seed: Optional[int] = Field(None, description="Seed for deterministic sampling")

    class LocalOptions(ServerOptions):
        """Options of local GGUF models (llama.cpp); unset ones keep llama-cpp-python's defaults."""

        max_tokens: Optional[int] = Field(
            None, ge=1, description=f"Maximum number of tokens to generate (default {LOCAL_DEFAULT_MAX_TOKENS})"
        )
        temperature: Optional[float] = Field(None, ge=0, le=2, description="Sampling temperature (default 0.2)")
        top_k: Optional[int] = Field(None, ge=0, description="Sample from the k most likely tokens (0: all)")
        min_p: Optional[float] = Field(None, ge=0, le=1, description="Minimum probability relative to the top token")
        n_ctx: Optional[int] = Field(
            None, ge=16, description=f"Context window in tokens, rounded up to a multiple of 256 (default: the model's, at most {LOCAL_MAX_DEFAULT_CTX})"
        )
        n_gpu_layers: Optional[int] = Field(
            None, ge=-1, description="Layers to offload to the GPU (-1: all; default all on a GPU build, else 0)"
        )
        n_threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: half the cores)")
        verbose: Optional[bool] = Field(None, description="Show llama.cpp's log and the rendered prompt")
        suffix: Optional[str] = Field(
            None, description="Fill in the middle (Codestral GGUF files): the code after the gap; the prompt is the code before it"
        )
        tool_choice: Optional[str] = Field(
            None, description="auto, none, any, required, or the name of one tool the model must call (enforced by a grammar)"
        )

    class TranscribeOptions(llm.Options):
        """Options of ``POST /v1/audio/transcriptions`` (the voxtral-transcribe model); each is sent only when set."""

        model_config = ConfigDict(defer_build=True, extra="forbid")

        model: Optional[str] = Field(None, description="A transcription model: voxtral-mini-latest (default) or another")
        language: Optional[str] = Field(
            None, pattern=r"^[A-Za-z]{2}$", description="The audio's language as two letters, e.g. en (improves accuracy)"
        )
        diarize: Optional[bool] = Field(None, description="Label the speakers (speaker_1: ...)")
        timestamps: Optional[Literal["segment", "word"]] = Field(
            None, description="Timed segments or words (kept in the log's response JSON; subtitles use them)"
        )
        context_bias: Optional[Union[str, list[str]]] = Field(
            None, description="Words to expect (names, jargon): comma-separated, or a JSON list"
        )
        temperature: Optional[float] = Field(None, ge=0, description="Sampling temperature")
        cache: Optional[bool] = Field(
            None, description="Reuse the transcript of the same audio with the same options (default: true)"
        )

        @field_validator("context_bias", mode="before")
        @classmethod
        def _words(cls, value: Any) -> Any:
            value = _json_list_or_str(value)
            words = value.split(",") if isinstance(value, str) else value
            if not isinstance(words, list):
                return value
            words = [str(word).strip() for word in words if str(word).strip()]
            spaced = [word for word in words if any(ch.isspace() for ch in word)]
            if spaced:
                raise ValueError(f"context_bias takes single words without spaces or commas, not {spaced[0]!r}")
            return words

    classes = (
        OptionsBase, MistralOptions, MistralReasoningOptions, FIMOptions, ServerOptions, LocalOptions,
        TranscribeOptions,
    )
    return {cls.__name__: cls for cls in classes}
