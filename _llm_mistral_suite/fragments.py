"""Fragment loaders: ``-f mistral-ocr:FILE`` (a document as Markdown) and ``-f voxtral:FILE`` (a recording's text)."""

from __future__ import annotations

import llm

from .audio import TranscribeSettings, check_audio, whole_transcript
from .documents import OCRSettings, ocr_document, ocr_markdown
from .errors import MistralSuiteError
from .media import Media, read_media
from .settings import mistral_key


def _named(argument: str, prefix: str) -> Media:
    if not argument or argument == "-":
        raise MistralSuiteError(
            f"Name a file or URL after {prefix}: (standard input holds the prompt), e.g. -f {prefix}:report.pdf"
        )
    return read_media(argument)


def _source(prefix: str, media: Media) -> str:
    """Where the fragment came from, as `llm fragments list` shows it: the prefix and the absolute path or the URL."""
    return f"{prefix}:{media.path.resolve() if media.path is not None else media.url}"


def ocr_fragment(argument: str) -> llm.Fragment:
    """``mistral-ocr:report.pdf``: the document as Markdown, pages marked (OCR results are cached)."""
    media = _named(argument, "mistral-ocr")
    result = ocr_document(media, OCRSettings(), mistral_key(None))
    return llm.Fragment(ocr_markdown(result), _source("mistral-ocr", media))


def transcript_fragment(argument: str) -> llm.Fragment:
    """``voxtral:meeting.mp3``: the recording's transcript (cached like the OCR's)."""
    media = _named(argument, "voxtral")
    check_audio(media)
    result = whole_transcript(media, TranscribeSettings(), mistral_key(None))
    return llm.Fragment(result["text"], _source("voxtral", media))
