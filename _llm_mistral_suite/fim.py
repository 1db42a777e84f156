"""Codestral fill-in-the-middle on Mistral's API (``codestral-fim``): the prompt is the code before the gap."""

from __future__ import annotations

from typing import Any

import llm

from .catalog import RETIRED, find_entry, load_catalog
from .errors import MistralSuiteError
from .options import OptionsFor
from .replies import AsyncReplyModel, ReplyModel, ReplyRequest
from .routes import missing_model_error, retired_message
from .settings import mistral_endpoint, mistral_key

FIM_DEFAULT_MODEL = "codestral-latest"
FIM_OPTIONS = ("suffix", "max_tokens", "min_tokens", "temperature", "top_p", "stop", "random_seed")


class _FIMBase:
    """Fill-in-the-middle: the prompt is the code before the gap, ``-o suffix`` the code after."""

    model_id = "mistral/codestral-fim"
    needs_key = "mistral"
    key_env_var = "LLM_MISTRAL_KEY"
    can_stream = True
    supports_conversation = False
    Options = OptionsFor("FIMOptions")

    def get_key(self, explicit_key: str | None = None) -> str:
        return mistral_key(explicit_key, self.key)

    def reply_request(self, prompt: llm.Prompt, stream: bool, key: str | None, conversation: Any = None) -> ReplyRequest:
        options = prompt.options
        name = (options.model or FIM_DEFAULT_MODEL).removeprefix("mistral/")  # -m mistral/codestral-2508
        entry = find_entry(name)
        if entry is not None and entry.status == RETIRED:
            raise MistralSuiteError(retired_message(entry))
        if entry is not None and "fim" not in entry.capabilities:
            fim_models = ", ".join(e.api_name for e in load_catalog() if "fim" in e.capabilities)
            raise MistralSuiteError(f"{entry.api_name} cannot fill in the middle; FIM models: {fim_models}.")
        if prompt.system:
            raise MistralSuiteError("Fill-in-the-middle takes no system prompt: pass the code before the gap only.")
        body: dict[str, Any] = {"model": entry.api_name if entry else name, "prompt": prompt.prompt}
        if stream:
            body["stream"] = True
        for option in FIM_OPTIONS:
            value = getattr(options, option)
            if value is not None:
                body[option] = value
        return ReplyRequest(
            mistral_endpoint(), "/fim/completions", key, body, body["model"],
            explain=(lambda error: missing_model_error(entry, error)) if entry else None,
        )


class CodestralFIM(_FIMBase, ReplyModel, llm.KeyModel):
    """Codestral's fill-in-the-middle."""


class AsyncCodestralFIM(_FIMBase, AsyncReplyModel, llm.AsyncKeyModel):
    """Async twin of ``CodestralFIM``."""
