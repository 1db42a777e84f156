"""Voxtral's audio endpoints: transcription (whole or streamed), speech (whole or streamed) and the list of voices."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any, AsyncIterator, BinaryIO, Iterator, NamedTuple, Optional

from .errors import MistralSuiteError, StreamCutError
from .media import Media, ResultCache, describe_type, rejected_input
from .progress import Progress
from .settings import Endpoint, mistral_endpoint
from .transport import (
    Payload,
    astream_events,
    decode_json,
    is_error_event,
    request,
    request_json,
    stream_error,
    stream_events,
)

DEFAULT_TRANSCRIPTION_MODEL = "voxtral-mini-latest"
DEFAULT_SPEECH_MODEL = "voxtral-mini-tts-latest"
SPEECH_FORMATS = ("mp3", "wav", "pcm", "flac", "opus")
TIMESTAMPS = ("segment", "word")
AUDIO_HINT = "Convert it to MP3, WAV, FLAC, OGG or M4A first (for example `ffmpeg -i {name} out.mp3`)."


class TranscribeSettings(NamedTuple):
    """The fields of a transcription request besides the audio; every one changes the result (and the cache key)."""

    model: str = DEFAULT_TRANSCRIPTION_MODEL
    language: Optional[str] = None  # two letters, e.g. en
    diarize: bool = False  # speaker labels
    timestamps: Optional[str] = None  # segment | word
    context_bias: tuple[str, ...] = ()  # words to expect (names, jargon)
    temperature: Optional[float] = None

    def fields(self, stream: bool = False) -> dict[str, Any]:
        """The request's fields under the spec's names (arrays as lists); without ``stream``, the cache key's."""
        data: dict[str, Any] = {"model": self.model}
        if self.language:
            data["language"] = self.language
        if self.temperature is not None:
            data["temperature"] = str(self.temperature)
        if self.diarize:
            data["diarize"] = "true"
        granularity = self.timestamps or ("segment" if self.diarize else None)  # speakers come with segments
        if granularity:
            data["timestamp_granularities"] = [granularity]
        if self.context_bias:
            data["context_bias"] = list(self.context_bias)
        if stream:
            data["stream"] = "true"
        return data

    def form(self, stream: bool = False) -> dict[str, Any]:
        """The form as Mistral's SDK sends it: an array field's values repeated under ``name[]``."""
        return {f"{name}[]" if isinstance(value, list) else name: value for name, value in self.fields(stream).items()}


def check_audio(media: Media) -> None:
    """Refuse, before sending anything, a local file that is clearly not audio (a PDF, an image, text)."""
    unknown = media.mime in (None, "application/octet-stream")  # left for the service to judge
    if media.url is None and not unknown and not str(media.mime).startswith(("audio/", "video/")):
        advice = " To read a document, use `llm mistral ocr`." if media.mime == "application/pdf" else ""
        raise MistralSuiteError(
            f"{media.name} is {describe_type(media.mime)}, not audio: transcribe an audio file "
            f"(MP3, WAV, FLAC, OGG, M4A, ...).{advice}"
        )


@contextlib.contextmanager
def transcription_payload(media: Media, settings: TranscribeSettings, stream: bool) -> Iterator[Payload]:
    """The multipart form for ``media`` (a URL goes as ``file_url``; a file is streamed from disk)."""
    data = settings.form(stream)
    if media.url is not None:
        yield Payload(data={**data, "file_url": media.url})
        return
    with media.open() as source:
        yield Payload(files={"file": (media.filename, source, media.mime or "application/octet-stream")}, data=data)


def transcription_error(media: Media, settings: TranscribeSettings, error: MistralSuiteError) -> MistralSuiteError:
    """The error to show for a failed transcription of ``media``."""
    detail = error.detail.lower()
    if error.status == 404 and ("model" in detail or "router" in detail):
        return MistralSuiteError(
            f"{settings.model} is not a transcription model of Mistral's API ({error.detail.rstrip('.')}). "
            f"Use {DEFAULT_TRANSCRIPTION_MODEL} (the default) or another voxtral-* model.",
            status=404, detail=error.detail,
        )
    if media.url is not None and ("download" in detail or "fetch" in detail or "url" in detail):
        hint = "Check that the URL is public and points at the recording itself, or download it and give the file."
    elif "audio" in detail or "decod" in detail or "format" in detail:
        hint = AUDIO_HINT.format(name=media.filename)
    else:
        hint = ""
    return rejected_input(media, "Mistral's transcription", error, hint)


def speaker_text(segments: list[dict[str, Any]]) -> str:
    """Segments as lines of ``speaker: text``, one line per change of speaker."""
    lines = SpeakerLines()
    return "".join(lines.add(segment) for segment in segments)


class SpeakerLines:
    """Builds ``speaker: text`` lines from segments as they arrive."""

    def __init__(self) -> None:
        self.started = False
        self.speaker: Optional[str] = None

    def add(self, segment: dict[str, Any]) -> str:
        text = str(segment.get("text") or "").strip()
        if not text:
            return ""
        speaker = segment.get("speaker_id")
        if self.started and speaker == self.speaker:
            return " " + text
        opening = "\n" if self.started else ""
        self.started, self.speaker = True, speaker
        return opening + (f"{speaker}: " if speaker else "") + text


def event_kind(name: str, event: dict[str, Any]) -> Optional[str]:
    """An SSE event's kind: its ``event:`` name, else (unnamed events are "message") the data's ``type``."""
    return name if name != "message" else event.get("type")


def stream_event(endpoint: Endpoint, name: str, data: str, key: str | None) -> dict[str, Any]:
    """One named SSE event's JSON data; a malformed one, or an error event, is an error."""
    try:
        event = json.loads(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise stream_error(endpoint, data, key, reported=False, what="stream event")
    if event_kind(name, event) == "error" or is_error_event(event):
        raise stream_error(endpoint, data, key, reported=True)
    return event


class TranscriptDecoder:
    """Turns a transcription's stream events (or its one JSON answer) into text pieces and the whole result."""

    def __init__(self, endpoint: Endpoint, settings: TranscribeSettings, key: str | None) -> None:
        self.endpoint, self.settings, self.key = endpoint, settings, key
        self.speakers = SpeakerLines() if settings.diarize else None
        self.segments: list[dict[str, Any]] = []
        self.language: Optional[str] = None
        self.result: Optional[dict[str, Any]] = None
        self.text_length = 0

    def whole(self, answer: Any) -> str:
        """The text of a whole (not streamed) answer."""
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise MistralSuiteError(f"{self.endpoint.label} answered a transcription without its text.")
        self.result = answer
        segments = answer.get("segments") or []
        if self.settings.diarize and any(s.get("speaker_id") for s in segments):
            return speaker_text(segments)
        return answer["text"]

    def take(self, name: Optional[str], data: str) -> Optional[str]:
        """One stream event; the text to show now, if any."""
        if name is None:
            return self.whole(decode_json(self.endpoint, data, self.key))
        if not data:
            return None
        event = stream_event(self.endpoint, name, data, self.key)
        kind = event_kind(name, event)
        if kind == "transcription.language":
            self.language = event.get("audio_language")
        elif kind == "transcription.text.delta" and self.speakers is None:
            piece = str(event.get("text") or "")
            self.text_length += len(piece)
            return piece or None
        elif kind == "transcription.segment":
            segment = {k: v for k, v in event.items() if k != "type"}
            self.segments.append({"type": "transcription_segment", **segment})
            if self.speakers is not None:
                piece = self.speakers.add(segment)
                self.text_length += len(piece)
                return piece or None
        elif kind == "transcription.done":
            self.result = {k: v for k, v in event.items() if k != "type"}
            self.result.setdefault("segments", self.segments)
            self.result.setdefault("language", self.language)
        return None

    def finish(self) -> dict[str, Any]:
        """The whole response; a stream that ended before ``transcription.done`` is an error."""
        if self.result is None:
            raise StreamCutError(
                f"The transcription from {self.endpoint.label} ended before it was finished (no transcription.done "
                f"event, after {self.text_length} characters). The text is incomplete; try again."
            )
        return self.result


def transcribe_pieces(media: Media, settings: TranscribeSettings, key: str, stream: bool,
                      decoder: TranscriptDecoder) -> Iterator[str]:
    """The transcript of ``media`` as it arrives (streamed) or at once; ``decoder.finish()`` has the result."""
    endpoint = mistral_endpoint()
    try:
        with transcription_payload(media, settings, stream) as payload:
            if stream:
                for name, data in stream_events(endpoint, "POST", "/audio/transcriptions", key, payload):
                    piece = decoder.take(name, data)
                    if piece:
                        yield piece
            else:
                with Progress().waiting(f"Transcribing {media.name} ({settings.model})"):
                    response = request(endpoint, "POST", "/audio/transcriptions", key, payload)
                yield decoder.whole(decode_json(endpoint, response.content, key))
    except MistralSuiteError as error:
        raise transcription_error(media, settings, error) from None


async def atranscribe_pieces(media: Media, settings: TranscribeSettings, key: str, stream: bool,
                             decoder: TranscriptDecoder) -> AsyncIterator[str]:
    """Async twin of ``transcribe_pieces``."""
    from .transport import arequest

    endpoint = mistral_endpoint()
    try:
        with transcription_payload(media, settings, stream) as payload:
            if stream:
                async for name, data in astream_events(endpoint, "POST", "/audio/transcriptions", key, payload):
                    piece = decoder.take(name, data)
                    if piece:
                        yield piece
            else:
                with Progress().waiting(f"Transcribing {media.name} ({settings.model})"):
                    response = await arequest(endpoint, "POST", "/audio/transcriptions", key, payload)
                yield decoder.whole(decode_json(endpoint, response.content, key))
    except MistralSuiteError as error:
        raise transcription_error(media, settings, error) from None


def transcript_cache(media: Media, settings: TranscribeSettings) -> tuple[ResultCache, Optional[str]]:
    """Where a transcript of ``media`` with ``settings`` is cached, and its key (None for a URL)."""
    cache = ResultCache("transcriptions")
    return cache, cache.key(media, settings.fields())


def whole_transcript(media: Media, settings: TranscribeSettings, key: str) -> dict[str, Any]:
    """The transcription of ``media``, from the cache when the same audio was transcribed with the same settings."""
    cache, cache_key = transcript_cache(media, settings)
    result = cache.get(cache_key)
    if result is not None and isinstance(result.get("text"), str):
        return result
    decoder = TranscriptDecoder(mistral_endpoint(), settings, key)
    for _ in transcribe_pieces(media, settings, key, False, decoder):
        pass
    result = decoder.finish()
    cache.put(cache_key, result)
    return result


# --- speech ----------------------------------------------------------------------------------------


class SpeechSettings(NamedTuple):
    """The fields of a speech request besides the text."""

    model: str = DEFAULT_SPEECH_MODEL
    voice: Optional[str] = None  # a voice id or slug (`llm mistral voices`)
    format: str = "mp3"

    def body(self, text: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": text, "response_format": self.format}
        if self.voice:
            body["voice_id"] = self.voice
        if stream:
            body["stream"] = True
        return body


def _audio_bytes(encoded: Any, endpoint: Endpoint) -> bytes:
    if not isinstance(encoded, str):
        raise MistralSuiteError(f"{endpoint.label} answered without audio data.")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise MistralSuiteError(f"{endpoint.label} sent audio data that is not valid base64.") from None


def speech_error(settings: SpeechSettings, error: MistralSuiteError) -> MistralSuiteError:
    """The error to show for a failed speech request."""
    detail = error.detail.lower()
    if error.status == 404 and ("model" in detail or "router" in detail):
        return MistralSuiteError(
            f"{settings.model} is not a speech model of Mistral's API ({error.detail.rstrip('.')}). "
            f"Use {DEFAULT_SPEECH_MODEL} (the default).", status=404, detail=error.detail,
        )
    if error.status == 404 and "voice" in detail:
        return MistralSuiteError(
            f"Mistral's API has no voice {settings.voice!r} ({error.detail.rstrip('.')}). "
            "`llm mistral voices` lists them.", status=404, detail=error.detail,
        )
    return error


def synthesize(text: str, settings: SpeechSettings, key: str, out: BinaryIO, stream: bool) -> dict[str, Any]:
    """Write the speech for ``text`` to ``out`` (as it arrives when ``stream``); returns the usage, if given.
    A stream that ends before ``speech.audio.done`` is an error (``out`` then holds only part of the audio)."""
    endpoint = mistral_endpoint()
    try:
        if not stream:
            answer = request_json(endpoint, "POST", "/audio/speech", key, settings.body(text, False))
            out.write(_audio_bytes(answer.get("audio_data") if isinstance(answer, dict) else None, endpoint))
            return {}
        written = 0
        payload = Payload(json=settings.body(text, True))
        for name, data in stream_events(endpoint, "POST", "/audio/speech", key, payload):
            if name is None:  # a server that answered with one JSON body
                answer = decode_json(endpoint, data, key)
                out.write(_audio_bytes(answer.get("audio_data") if isinstance(answer, dict) else None, endpoint))
                return {}
            event = stream_event(endpoint, name, data, key) if data else {}
            kind = event_kind(name, event)
            if kind == "speech.audio.delta":
                block = _audio_bytes(event.get("audio_data"), endpoint)
                out.write(block)
                out.flush()
                written += len(block)
            elif kind == "speech.audio.done":
                return event.get("usage") or {}
        raise StreamCutError(
            f"The speech from {endpoint.label} ended before it was finished (no speech.audio.done event, after "
            f"{written:,} bytes). The audio is incomplete; try again."
        )
    except MistralSuiteError as error:
        raise speech_error(settings, error) from None


def list_voices(key: str, kind: str = "all") -> list[dict[str, Any]]:
    """Every voice of ``GET /v1/audio/voices`` (``kind``: all, preset or custom), all pages."""
    voices: list[dict[str, Any]] = []
    while True:
        path = f"/audio/voices?limit=100&offset={len(voices)}&type={kind}"
        page = request_json(mistral_endpoint(), "GET", path, key)
        items = page.get("items") if isinstance(page, dict) else None
        if not isinstance(items, list):
            raise MistralSuiteError("Mistral's API answered /v1/audio/voices without a list of voices.")
        voices.extend(item for item in items if isinstance(item, dict))
        if not items or len(voices) >= int(page.get("total") or 0):
            return voices
