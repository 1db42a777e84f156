"""The ``mistral/voxtral-transcribe`` model: one audio attachment in, its transcript out, cached and logged by llm."""

from __future__ import annotations

from typing import Any, Optional

import llm

from .catalog import AUDIO_TYPES
from .errors import MistralSuiteError
from .options import OptionsFor
from .settings import mistral_key

TRANSCRIBE_MODEL_ID = "mistral/voxtral-transcribe"
TRANSCRIBE_ALIASES = ("voxtral-transcribe",)
# What `-a` may attach: audio and the video containers Voxtral reads; an unknown type is left to the service.
TRANSCRIBE_TYPES = AUDIO_TYPES | frozenset({
    "audio/x-m4a", "audio/m4a", "audio/aac", "audio/webm", "audio/opus", "audio/x-flac", "video/mp4", "video/webm",
    "video/quicktime", "application/octet-stream",
})  # fmt: skip


class _TranscribeBase:
    """What the sync and async transcription models share: identity, key lookup, input and the logged result."""

    model_id = TRANSCRIBE_MODEL_ID
    needs_key = "mistral"
    key_env_var = "LLM_MISTRAL_KEY"
    can_stream = True
    supports_conversation = False  # each transcription stands alone
    attachment_types = TRANSCRIBE_TYPES
    Options = OptionsFor("TranscribeOptions")

    def get_key(self, explicit_key: str | None = None) -> str:
        return mistral_key(explicit_key, self.key)

    def prepare(self, prompt: llm.Prompt) -> tuple[Any, Any, Any, Optional[str]]:
        """(media, settings, cache, cache key) for the prompt's one audio attachment."""
        from .audio import DEFAULT_TRANSCRIPTION_MODEL, TranscribeSettings, check_audio, transcript_cache
        from .media import media_from_attachment

        if (prompt.prompt or "").strip():
            raise MistralSuiteError(
                "voxtral-transcribe transcribes the attached audio and takes no prompt text. Attach the audio with "
                "-a FILE (or `llm mistral transcribe FILE`); words to expect go in -o context_bias."
            )
        if len(prompt.attachments) != 1:
            raise MistralSuiteError(
                f"voxtral-transcribe transcribes one audio file at a time; this prompt has {len(prompt.attachments)}. "
                "Attach it with -a FILE or -a URL."
            )
        media = media_from_attachment(prompt.attachments[0])
        check_audio(media)
        options = prompt.options
        bias = options.context_bias
        settings = TranscribeSettings(
            model=options.model or DEFAULT_TRANSCRIPTION_MODEL,
            language=options.language.lower() if options.language else None,
            diarize=bool(options.diarize),
            timestamps=options.timestamps,
            context_bias=tuple([bias] if isinstance(bias, str) else bias or ()),
            temperature=options.temperature,
        )
        return (media, settings, *transcript_cache(media, settings))

    def cached(self, prompt: llm.Prompt, cache: Any, cache_key: Optional[str]) -> Optional[dict[str, Any]]:
        if prompt.options.cache is False:
            return None
        result = cache.get(cache_key)
        return result if result is not None and isinstance(result.get("text"), str) else None

    def record(self, response: llm.Response | llm.AsyncResponse, result: dict[str, Any], settings: Any,
               *, cached: bool) -> None:
        """Usage, the resolved model and the result (segments included: subtitles are made from them) for the log."""
        usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
        if not cached and usage:
            seconds = usage.get("prompt_audio_seconds")
            response.set_usage(input=usage.get("prompt_tokens"), output=usage.get("completion_tokens"),
                               details={"prompt_audio_seconds": seconds} if seconds else None)
        if result.get("model") and result["model"] != settings.model:
            response.set_resolved_model(result["model"])
        response.response_json = {
            "model": result.get("model"), "language": result.get("language"), "text": result.get("text"),
            "segments": result.get("segments") or [], "usage": usage or None, **({"cached": True} if cached else {}),
        }  # fmt: skip


def cached_text(result: dict[str, Any], settings: Any) -> str:
    from .audio import speaker_text

    segments = result.get("segments") or []
    if settings.diarize and any(s.get("speaker_id") for s in segments):
        return speaker_text(segments)
    return str(result["text"])


class VoxtralTranscribe(_TranscribeBase, llm.KeyModel):
    """Transcription with Voxtral (``llm -m voxtral-transcribe -a meeting.mp3``)."""

    def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[no-untyped-def]
        from .audio import TranscriptDecoder, transcribe_pieces
        from .settings import mistral_endpoint

        media, settings, cache, cache_key = self.prepare(prompt)
        cached = self.cached(prompt, cache, cache_key)
        if cached is not None:
            yield cached_text(cached, settings)
            self.record(response, cached, settings, cached=True)
            return
        decoder = TranscriptDecoder(mistral_endpoint(), settings, key)
        yield from transcribe_pieces(media, settings, key, stream, decoder)
        result = decoder.finish()
        cache.put(cache_key, result)
        self.record(response, result, settings, cached=False)


class AsyncVoxtralTranscribe(_TranscribeBase, llm.AsyncKeyModel):
    """Async twin of ``VoxtralTranscribe``."""

    async def execute(self, prompt, stream, response, conversation, key=None):  # type: ignore[no-untyped-def]
        from .audio import TranscriptDecoder, atranscribe_pieces
        from .settings import mistral_endpoint

        media, settings, cache, cache_key = self.prepare(prompt)
        cached = self.cached(prompt, cache, cache_key)
        if cached is not None:
            yield cached_text(cached, settings)
            self.record(response, cached, settings, cached=True)
            return
        decoder = TranscriptDecoder(mistral_endpoint(), settings, key)
        async for piece in atranscribe_pieces(media, settings, key, stream, decoder):
            yield piece
        result = decoder.finish()
        cache.put(cache_key, result)
        self.record(response, result, settings, cached=False)
