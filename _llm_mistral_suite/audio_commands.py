"""``llm mistral transcribe``, ``speak`` and ``voices``: Voxtral's audio endpoints as commands that pipe."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click
import llm

from .audio import (
    DEFAULT_SPEECH_MODEL,
    DEFAULT_TRANSCRIPTION_MODEL,
    SPEECH_FORMATS,
    TIMESTAMPS,
    SpeechSettings,
    check_audio,
)
from .errors import MistralSuiteError
from .media import read_media
from .settings import mistral_key
from .transcription import TRANSCRIBE_ALIASES


def audio_attachment(source: str) -> llm.Attachment:
    """SOURCE (a file, a URL or -) as the attachment the voxtral-transcribe model takes."""
    media = read_media(source)
    check_audio(media)
    mime = media.mime or "application/octet-stream"  # the service judges what we cannot tell
    if media.url is not None:
        return llm.Attachment(type=mime, url=media.url)
    if media.path is not None:
        return llm.Attachment(type=mime, path=str(media.path.resolve()))
    return llm.Attachment(type=mime, content=media.data)


def _language(value: Optional[str]) -> Optional[str]:
    if value is not None and not (len(value) == 2 and value.isascii() and value.isalpha()):
        raise click.BadParameter(f"{value!r} is not a two-letter language code such as en, fr or de")
    return value.lower() if value else None


def _words(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if not value.strip() or "," in value or any(ch.isspace() for ch in value.strip()):
            raise click.BadParameter(f"{value!r}: give one word per --context-bias, without spaces or commas")
    return tuple(value.strip() for value in values)


@click.command(name="transcribe")
@click.argument("audio")
@click.option("-m", "--model", default=DEFAULT_TRANSCRIPTION_MODEL, show_default=True, help="Transcription model")
@click.option("--language", callback=lambda ctx, param, value: _language(value),
              help="The audio's language as two letters, e.g. en or fr (improves accuracy)")
@click.option("--diarize", is_flag=True, help="Label the speakers: speaker_1: ...")
@click.option("--timestamps", type=click.Choice(TIMESTAMPS),
              help="Time each segment or each word: [start --> end] lines in text, cues in subtitles")
@click.option("--format", "output_format", type=click.Choice(["text", "json", "srt", "vtt"]), default="text",
              show_default=True, help="text, the whole response as JSON, or SRT / WebVTT subtitles")
@click.option("--context-bias", multiple=True, metavar="WORD", callback=lambda ctx, param, value: _words(value),
              help="A word to expect: a name or jargon (repeatable; one word each, no spaces or commas)")
@click.option("--temperature", type=click.FloatRange(min=0), help="Sampling temperature")
@click.option("--stream", is_flag=True, help="Print the text as it arrives (timed lines and subtitles: when complete)")
@click.option("--no-cache", is_flag=True, help="Transcribe again even if this audio was transcribed with these options")
@click.option("--key", help="Mistral API key to use")
@click.option("-n", "--no-log", is_flag=True, help="Don't log to logs.db")
def transcribe_command(audio: str, model: str, language: Optional[str], diarize: bool, timestamps: Optional[str],
                       output_format: str, context_bias: tuple[str, ...], temperature: Optional[float], stream: bool,
                       no_cache: bool, key: Optional[str], no_log: bool) -> None:
    """Transcribe AUDIO (a file, a URL, or - for standard input) with Voxtral and print the text.

    Each transcription is logged like a prompt, as model mistral/voxtral-transcribe with the audio as its
    attachment (`llm logs -m voxtral-transcribe`), and cached by the file's sha256 and the options.

    \b
    Examples:
      llm mistral transcribe meeting.mp3 > meeting.txt
      llm mistral transcribe meeting.mp3 --diarize --language en
      llm mistral transcribe talk.wav --format srt > talk.srt
      llm mistral transcribe https://example.com/podcast.mp3 --stream
      cat memo.m4a | llm mistral transcribe - --context-bias Mistral --context-bias Voxtral
    """
    import sqlite_utils
    from llm.cli import logs_db_path, logs_on, render_errors
    from llm.migrations import migrate
    from pydantic import ValidationError

    from .subtitles import cues, srt, timed_text, vtt

    transcriber = llm.get_model(TRANSCRIBE_ALIASES[0])
    if output_format in ("srt", "vtt") and timestamps is None:
        timestamps = "segment"
    options: dict[str, Any] = {"language": language, "diarize": diarize or None, "timestamps": timestamps,
                               "context_bias": list(context_bias) or None, "temperature": temperature,
                               "cache": False if no_cache else None}  # fmt: skip
    if model != DEFAULT_TRANSCRIPTION_MODEL:
        options["model"] = model
    try:
        validated = {name: value for name, value in transcriber.Options(**options) if value is not None}
    except ValidationError as error:
        raise click.ClickException(render_errors(error.errors()))
    attachment = audio_attachment(audio)
    response = transcriber.prompt(None, attachments=[attachment], stream=stream, key=key, **validated)
    streaming_text = stream and output_format == "text" and timestamps is None
    for piece in response:  # the whole transcript arrives (and is shown, when streaming text) before it is logged
        if streaming_text:
            click.echo(piece, nl=False)
    if logs_on() and not no_log:
        db = sqlite_utils.Database(logs_db_path())
        migrate(db)
        response.log_to_db(db)
    result = response.response_json or {}
    if streaming_text:
        click.echo()
    elif output_format == "json":
        click.echo(json.dumps(result, indent=2))
    elif output_format == "text" and timestamps is None:
        click.echo(response.text())
    else:
        found = cues(result.get("segments") or [], words=timestamps == "word" and output_format != "text")
        if not found:
            raise MistralSuiteError("The transcription has no timed segments: the service sent no timestamps.")
        click.echo({"srt": srt, "vtt": vtt, "text": timed_text}[output_format](found), nl=False)


def stdout_is_a_terminal() -> bool:
    return sys.stdout.isatty()


def _speech_text(text: Optional[str]) -> str:
    if text is None or text == "-":
        stdin = click.get_text_stream("stdin")
        if text is None and stdin.isatty():
            raise click.UsageError("give TEXT, or pipe text to standard input (or TEXT as -)")
        text = stdin.read()
    if not text.strip():
        raise MistralSuiteError("Nothing to say: the text is empty.")
    return text


@click.command(name="speak")
@click.argument("text", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the audio to this file (default: standard output, when it is not a terminal)")
@click.option("--format", "audio_format", type=click.Choice(SPEECH_FORMATS),
              help="Audio format (default: from the -o file's extension, else mp3)")
@click.option("--voice", help="A voice id or slug (`llm mistral voices` lists them)")
@click.option("-m", "--model", default=DEFAULT_SPEECH_MODEL, show_default=True, help="Speech model")
@click.option("--stream", is_flag=True, help="Write the audio as it arrives (to play it while it is made)")
@click.option("--key", help="Mistral API key to use")
def speak_command(text: Optional[str], output: Optional[Path], audio_format: Optional[str], voice: Optional[str],
                  model: str, stream: bool, key: Optional[str]) -> None:
    """Say TEXT (or standard input, or - ) with Voxtral and write the audio.

    \b
    Examples:
      llm mistral speak "Bonjour tout le monde" -o hello.mp3
      llm "a haiku about the sea" | llm mistral speak -o haiku.wav
      llm mistral speak "Testing" --voice oliver --stream | mpv -
    """
    from .audio import synthesize

    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    audio_format = audio_format or (suffix if suffix in SPEECH_FORMATS else "mp3")
    settings = SpeechSettings(model=model, voice=voice, format=audio_format)
    if output is None and stdout_is_a_terminal():
        raise click.UsageError("give -o FILE, or redirect the audio: llm mistral speak TEXT > out.mp3")
    words = _speech_text(text)
    api_key = mistral_key(key)
    if output is None:
        synthesize(words, settings, api_key, click.get_binary_stream("stdout"), stream)
        return
    partial = output.with_name(output.name + ".part")  # renamed once complete: a failed run leaves no short file
    try:
        with partial.open("wb") as out:
            synthesize(words, settings, api_key, out, stream)
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    click.echo(f"Wrote {output} ({output.stat().st_size:,} bytes of {audio_format})", err=True)


@click.command(name="voices")
@click.option("--type", "kind", type=click.Choice(["all", "preset", "custom"]), default="all", show_default=True,
              help="Mistral's preset voices, your own, or both")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
@click.option("--key", help="Mistral API key to use")
def voices_command(kind: str, as_json: bool, key: Optional[str]) -> None:
    """List the voices `llm mistral speak --voice` can use."""
    from .audio import list_voices

    voices = list_voices(mistral_key(key), kind)
    if as_json:
        click.echo(json.dumps(voices, indent=2))
        return
    rows = [("id", "name", "slug", "languages", "gender", "kind")] + [
        (str(v.get("id") or ""), str(v.get("name") or ""), str(v.get("slug") or ""),
         ", ".join(v.get("languages") or []), str(v.get("gender") or ""),
         "custom" if v.get("user_id") else "preset")
        for v in voices
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
