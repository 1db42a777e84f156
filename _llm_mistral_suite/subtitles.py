"""Transcripts as subtitles (SRT, WebVTT) or timed lines, from the timed segments (or words) of a transcription."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

MAX_CUE_CHARS = 42  # words are gathered into cues of at most one subtitle line
MAX_CUE_SECONDS = 7.0


class Cue(NamedTuple):
    start: float
    end: float
    text: str
    speaker: Optional[str] = None


def cues(segments: list[dict[str, Any]], words: bool) -> list[Cue]:
    """One cue per segment; with word timestamps, consecutive words of one speaker gathered into short lines."""
    found: list[Cue] = []
    for segment in segments:
        try:
            start, end = float(segment["start"]), float(segment["end"])
        except (KeyError, TypeError, ValueError):
            continue
        text, speaker = str(segment.get("text") or "").strip(), segment.get("speaker_id")
        if not text:
            continue
        last = found[-1] if found else None
        if (
            words and last is not None and last.speaker == speaker
            and len(last.text) + 1 + len(text) <= MAX_CUE_CHARS and end - last.start <= MAX_CUE_SECONDS
        ):
            found[-1] = last._replace(end=end, text=f"{last.text} {text}")
        else:
            found.append(Cue(start, end, text, speaker))
    return found


def _clock(seconds: float, separator: str) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def srt(found: list[Cue]) -> str:
    """SubRip: numbered cues; a speaker, when known, opens the cue's text."""
    blocks = []
    for number, cue in enumerate(found, 1):
        text = f"{cue.speaker}: {cue.text}" if cue.speaker else cue.text
        blocks.append(f"{number}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{text}\n")
    return "\n".join(blocks)


def timed_text(found: list[Cue]) -> str:
    """One line per cue: ``[00:00:01.000 --> 00:00:02.500] speaker_1: text``."""
    return "".join(
        f"[{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}] {cue.speaker + ': ' if cue.speaker else ''}{cue.text}\n"
        for cue in found
    )


def vtt(found: list[Cue]) -> str:
    """WebVTT: a speaker, when known, as a voice span (``<v speaker_1>``)."""
    blocks = ["WEBVTT\n"]
    for cue in found:
        text = cue.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if cue.speaker:
            text = f"<v {cue.speaker}>{text}"
        blocks.append(f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{text}\n")
    return "\n".join(blocks)
