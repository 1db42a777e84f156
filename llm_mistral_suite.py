"""llm-mistral-suite's hooks: every Mistral model, and the ``llm mistral`` commands, registered with llm.

Every ``llm`` command imports this module, even ``llm --help``, so it imports nothing of the implementation
(the private package ``_llm_mistral_suite``) until a hook needs it. The hooks never touch the network and never
raise: a part that cannot load is reported in one line on stderr, and the other parts still register.

The package has one file per role, each opening with a line that says what it is for; imports between them
flow one way, in the order data flows (settings, errors, storage -> catalog -> retry, transport -> wire -> the
models -> the commands). The README's "How it is built" maps every file.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import click
import llm

# `llm mistral NAME` -> (module, click command); a module is imported only when its command is used.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "models": ("_llm_mistral_suite.commands", "models_command"),
    "refresh": ("_llm_mistral_suite.commands", "refresh_command"),
    "fim": ("_llm_mistral_suite.commands", "fim_command"),
    "servers": ("_llm_mistral_suite.commands", "servers_group"),
    "local": ("_llm_mistral_suite.local.commands", "local_group"),
    "ocr": ("_llm_mistral_suite.document_commands", "ocr_command"),
    "transcribe": ("_llm_mistral_suite.audio_commands", "transcribe_command"),
    "speak": ("_llm_mistral_suite.audio_commands", "speak_command"),
    "voices": ("_llm_mistral_suite.audio_commands", "voices_command"),
    "batch": ("_llm_mistral_suite.batch_commands", "batch_group"),
}

# `-f PREFIX:ARGUMENT` -> (the function of `_llm_mistral_suite.fragments` that loads it, imported on use; what it does)
FRAGMENT_LOADERS: dict[str, tuple[str, str]] = {
    "mistral-ocr": ("ocr_fragment", "A PDF, image or Office file (path or URL) read by Mistral's OCR, as Markdown "
                    "(cached): -f mistral-ocr:report.pdf"),
    "voxtral": ("transcript_fragment", "A recording (path or URL) transcribed by Voxtral (cached): "
                "-f voxtral:meeting.mp3"),
}

_reported: set[str] = set()


def _report(part: str, error: BaseException) -> None:
    """Say once per process, on stderr, that ``part`` of the plugin failed to load (models would vanish)."""
    if part in _reported:
        return
    _reported.add(part)
    if isinstance(error, ImportError):
        what = f"llm-mistral-suite is damaged: {part} cannot be imported ({error}). Reinstall it: llm install -U llm-mistral-suite"
    else:
        what = f"llm-mistral-suite could not register {part} ({type(error).__name__}: {error})."
    click.echo(f"Error: {what}", err=True)


def _guarded(part: str, add: Callable[[Any], None], register: Any) -> None:
    """``add(register)``, with any failure reported instead of raised: a hook never breaks llm."""
    try:
        add(register)
    except Exception as error:  # noqa: BLE001 - every `llm` command runs the hooks
        _report(part, error)


def _api_chat_models(register: Any) -> None:
    from _llm_mistral_suite.catalog import load_catalog
    from _llm_mistral_suite.chat import AsyncMistralChat, MistralChat
    from _llm_mistral_suite.fim import AsyncCodestralFIM, CodestralFIM

    for entry in load_catalog():
        if "chat" in entry.capabilities:
            register(MistralChat(entry), AsyncMistralChat(entry), aliases=entry.aliases)
    register(CodestralFIM(), AsyncCodestralFIM(), aliases=("codestral-fim",))


def _transcription_model(register: Any) -> None:
    from _llm_mistral_suite.transcription import TRANSCRIBE_ALIASES, AsyncVoxtralTranscribe, VoxtralTranscribe

    register(VoxtralTranscribe(), AsyncVoxtralTranscribe(), aliases=TRANSCRIBE_ALIASES)


def _server_chat_models(register: Any) -> None:
    from _llm_mistral_suite.servers import AsyncServerChat, ServerChat, load_servers

    for server in load_servers():
        if not server.embedding:
            register(ServerChat(server), AsyncServerChat(server), aliases=server.aliases)


def _local_chat_models(register: Any) -> None:
    from _llm_mistral_suite.local.models import AsyncLocalChat, LocalChat
    from _llm_mistral_suite.local.registry import local_models

    for info in local_models():
        if not info.embedding:
            register(LocalChat(info), AsyncLocalChat(info), aliases=info.aliases)


def _api_embedding_models(register: Any) -> None:
    from _llm_mistral_suite.embeddings import embedding_models

    for model, aliases in embedding_models():
        register(model, aliases=aliases)


def _server_embedding_models(register: Any) -> None:
    from _llm_mistral_suite.servers import ServerEmbedding, load_servers

    for server in load_servers():
        if server.embedding:
            register(ServerEmbedding(server), aliases=server.aliases)


def _local_embedding_models(register: Any) -> None:
    from _llm_mistral_suite.local.models import LocalEmbedding
    from _llm_mistral_suite.local.registry import local_models

    for info in local_models():
        if info.embedding:
            register(LocalEmbedding(info), aliases=info.aliases)


@llm.hookimpl
def register_models(register: Any) -> None:
    _guarded("the Mistral API models", _api_chat_models, register)
    _guarded("the transcription model", _transcription_model, register)
    _guarded("the server models", _server_chat_models, register)
    _guarded("the local GGUF models", _local_chat_models, register)


@llm.hookimpl
def register_embedding_models(register: Any) -> None:
    _guarded("the Mistral API embedding models", _api_embedding_models, register)
    _guarded("the server embedding models", _server_embedding_models, register)
    _guarded("the local GGUF embedding models", _local_embedding_models, register)


def _fragment_loader(prefix: str) -> Callable[[str], Any]:
    def load(argument: str) -> Any:
        from _llm_mistral_suite import fragments

        return getattr(fragments, FRAGMENT_LOADERS[prefix][0])(argument)

    load.__doc__ = FRAGMENT_LOADERS[prefix][1]
    return load


@llm.hookimpl
def register_fragment_loaders(register: Any) -> None:
    for prefix in FRAGMENT_LOADERS:
        register(prefix, _fragment_loader(prefix))


class _LazyGroup(click.Group):
    """``llm mistral``: each subcommand is imported when it is used or its help is shown."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attribute = SUBCOMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attribute)
        except ImportError as error:
            raise click.ClickException(
                f"llm-mistral-suite is damaged: `llm mistral {name}` cannot be imported ({error}). "
                "Reinstall it: llm install -U llm-mistral-suite"
            ) from None


@llm.hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(_LazyGroup(name="mistral", help=(
        "Mistral models: the API catalog, documents (OCR) and audio, local GGUF files and OpenAI-compatible servers."
    )))
