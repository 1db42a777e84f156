"""End-to-end: `llm mistral transcribe`, `speak`, `voices` and `-f voxtral:` through the installed `llm` CLI as a
subprocess against the fake Mistral (scenarios played in parallel; every body the fakes receive is validated)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from conftest import (
    SENTINEL_KEY,
    CLISession,
    assert_cli_error,
    assert_cli_ok,
    play_scenarios,
    selected_scenarios,
)
from fake_mistral import JSONReply, SSEReply
from media_files import audio_info, write_samples

TEXT = "Hello and welcome. This is a test recording. The weather is fine today."
SCENARIOS: dict[str, Callable[[CLISession], Any]] = {}


def scenario(fn: Callable[[CLISession], Any]) -> Callable[[CLISession], Any]:
    SCENARIOS[fn.__name__] = fn
    return fn


@pytest.fixture(scope="module")
def played(request, tmp_path_factory) -> dict[str, CLISession]:
    return play_scenarios(selected_scenarios(request, SCENARIOS), tmp_path_factory.mktemp("audio-cli"))


@pytest.fixture
def s(request, played) -> CLISession:
    return played[request.node.name.removeprefix("test_")].check()


def samples(s: CLISession) -> dict[str, Path]:
    return write_samples(s.user_dir.parent / "samples")


def forms(s: CLISession) -> list:
    return [rec for rec in s.fake.requests if rec.route == "/v1/audio/transcriptions"]


def run_with_bytes(s: CLISession, data: bytes, *args: str) -> subprocess.CompletedProcess:
    """``llm ARGS`` with ``data`` as binary standard input; stdout kept as bytes."""
    done = subprocess.run([sys.executable, "-m", "llm", *args], input=data, env=s.env, capture_output=True, timeout=60)
    s.results.append(done)
    return done


def assert_no_key_stored(user_dir: Path) -> None:
    for path in (p for p in user_dir.rglob("*") if p.is_file()):
        assert SENTINEL_KEY.encode() not in path.read_bytes(), f"the key is in {path}"


@scenario
def transcribe_logged_and_cached(s: CLISession) -> None:
    wav = samples(s)["wav"]
    s.run("mistral", "transcribe", str(wav))
    s.run("mistral", "transcribe", str(wav))
    s.run("mistral", "transcribe", str(wav), "--language", "FR", "-n")
    s.run("logs", "--json", "-n", "3")
    s.run("logs", "-m", "voxtral-transcribe", "-n", "1")


def test_transcribe_logged_and_cached(s):
    first, second, unlogged, logs, shown = s.results
    assert assert_cli_ok(first) == assert_cli_ok(second) == assert_cli_ok(unlogged) == TEXT + "\n"
    assert len(forms(s)) == 2  # the second run was a cache hit; --language made another request
    fresh, cached = json.loads(assert_cli_ok(logs))  # oldest first; the -n run was not logged
    wav = (s.user_dir.parent / "samples" / "speech.wav").resolve()
    for logged in (cached, fresh):
        assert logged["model"] == "mistral/voxtral-transcribe" and logged["response"] == TEXT
        [attachment] = logged["attachments"]
        assert (attachment["type"], attachment["path"], attachment["content"]) == ("audio/wav", str(wav), None)
    assert (fresh["input_tokens"], fresh["output_tokens"], fresh["resolved_model"]) == (32, 22, "voxtral-mini-2512")
    assert json.loads(fresh["token_details"]) == {"prompt_audio_seconds": 3} and cached["response_json"]["cached"]
    assert cached["input_tokens"] is None  # nothing was paid for the cached one
    out = assert_cli_ok(shown)
    assert "Model: **mistral/voxtral-transcribe**" in out and str(wav) in out and TEXT in out
    assert_no_key_stored(s.user_dir)


@scenario
def transcribe_formats(s: CLISession) -> None:
    wav = samples(s)["wav"]
    s.run("mistral", "transcribe", str(wav), "--format", "srt")
    s.run("mistral", "transcribe", str(wav), "--format", "vtt", "--diarize")
    s.run("mistral", "transcribe", str(wav), "--diarize", "-m", "voxtral-small-latest")
    s.run("mistral", "transcribe", str(wav), "--format", "json", "--timestamps", "word", "--context-bias", "ACME",
          "--context-bias", "Voxtral", "--temperature", "0.1")
    s.run("mistral", "transcribe", str(wav), "--timestamps", "segment", "--stream")


def test_transcribe_formats(s):
    subtitles, voices, diarized, whole, timed = (assert_cli_ok(result) for result in s.results)
    assert subtitles == (
        "1\n00:00:00,000 --> 00:00:01,000\nHello and welcome.\n\n2\n00:00:01,000 --> 00:00:02,000\n"
        "This is a test recording.\n\n3\n00:00:02,000 --> 00:00:02,500\nThe weather is fine today.\n"
    )
    assert voices.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v speaker_1>Hello and welcome.\n\n")
    assert diarized == ("speaker_1: Hello and welcome.\nspeaker_2: This is a test recording.\n"
                        "speaker_1: The weather is fine today.\n")  # fmt: skip
    result = json.loads(whole)
    assert result["text"] == TEXT and [w["text"] for w in result["segments"][:3]] == ["Hello", "and", "welcome."]
    assert timed.splitlines() == ["[00:00:00.000 --> 00:00:01.000] Hello and welcome.",
                                  "[00:00:01.000 --> 00:00:02.000] This is a test recording.",
                                  "[00:00:02.000 --> 00:00:02.500] The weather is fine today."]  # fmt: skip
    srt, vtt, speakers, words = forms(s)  # the timed lines reused the SRT run's transcript (same audio and options)
    assert srt.form["timestamp_granularities"] == ["segment"] and vtt.form_value("diarize") == "true"
    assert speakers.form_value("model") == "voxtral-small-latest"
    assert words.form["context_bias"] == ["ACME", "Voxtral"] and words.form_value("temperature") == "0.1"
    assert words.sent_form["context_bias[]"] == ["ACME", "Voxtral"]  # repeated under the name Mistral's SDK uses


@scenario
def transcribe_streamed_piped_and_by_url(s: CLISession) -> None:
    wav = samples(s)["wav"]
    s.run("mistral", "transcribe", str(wav), "--stream")
    run_with_bytes(s, wav.read_bytes(), "mistral", "transcribe", "-")
    s.run("mistral", "transcribe", s.fake.host_file("memo.wav", wav.read_bytes(), "audio/wav"))
    s.run("-m", "voxtral-transcribe", "-a", str(wav), "-o", "diarize", "1", "--no-stream")


def test_transcribe_streamed_piped_and_by_url(s):
    streamed, piped, by_url, direct = s.results
    assert assert_cli_ok(streamed) == TEXT + "\n"
    assert piped.returncode == 0 and piped.stdout.decode() == TEXT + "\n"
    assert assert_cli_ok(by_url) == TEXT + "\n"
    assert assert_cli_ok(direct).startswith("speaker_1: Hello and welcome.\nspeaker_2:")
    stream, url, diarized = forms(s)  # the piped audio is the file's: its transcript came from the cache
    assert stream.form_value("stream") == "true" and stream.files["file"].filename == "speech.wav"
    assert url.form_value("file_url").endswith("/hosted/memo.wav") and not url.files
    assert diarized.form_value("stream") is None


@scenario
def transcribe_errors(s: CLISession) -> None:
    files = samples(s)
    junk = s.user_dir.parent / "noise.ogg"
    junk.write_bytes(bytes(range(256)) * 8)
    s.run("mistral", "transcribe", "missing.mp3")
    s.run("mistral", "transcribe", str(files["pdf"]))
    s.run("mistral", "transcribe", str(junk))
    s.run("mistral", "transcribe", "https://example.com/talk.mp3")
    s.run("mistral", "transcribe", str(files["wav"]), "--language", "english")
    s.run("mistral", "transcribe", str(files["wav"]), "-m", "mistral-large-latest")
    s.fake.queue(SSEReply([("transcription.text.delta", {"type": "transcription.text.delta", "text": "Hello and"})],
                          done=False))
    s.run("mistral", "transcribe", str(files["wav"]), "--stream", "--no-cache")
    s.run("mistral", "transcribe", str(files["wav"]), "--key", "bad-key", "--no-cache")
    s.run("-m", "voxtral-transcribe", "-a", str(files["wav"]), "Please transcribe")
    usage = {"prompt_tokens": 32, "completion_tokens": 22, "total_tokens": 54}
    s.fake.queue(JSONReply({"model": "voxtral-mini-2512", "text": TEXT, "language": "en", "segments": [],
                            "usage": usage}))  # the service ignored the timestamps: no subtitles, but it was paid
    s.run("mistral", "transcribe", str(files["wav"]), "--format", "srt", "--no-cache")
    s.run("logs", "-n", "1", "--json")


def test_transcribe_errors(s):
    missing, pdf, noise, unreachable, language, model, cut, key, with_text, untimed, logs = s.results
    assert_cli_error(missing, "No such file: missing.mp3")
    assert_cli_error(pdf, "report.pdf is a PDF document (application/pdf), not audio", "llm mistral ocr")
    assert_cli_error(noise, "noise.ogg: The file could not be decoded as audio", "ffmpeg -i noise.ogg out.mp3")
    assert_cli_error(unreachable, "could not read https://example.com/talk.mp3", "Check that the URL is public")
    assert_cli_error(language, "'english' is not a two-letter language code")
    assert_cli_error(model, "mistral-large-latest is not a transcription model")
    assert_cli_error(cut, "ended before it was finished", "incomplete")
    assert cut.stdout == "Hello and"  # what arrived was shown, and the run failed: nothing passes for complete
    assert_cli_error(key, "rejected the API key (401 Unauthorized)")
    assert_cli_error(with_text, "takes no prompt text")
    assert_cli_error(untimed, "no timed segments")
    [logged] = json.loads(assert_cli_ok(logs))
    assert logged["response"] == TEXT and logged["input_tokens"] == 32  # the paid transcription is in the log
    assert len(forms(s)) == 6  # noise, unreachable, model, cut, key, untimed: the rest was refused before sending
    assert all(SENTINEL_KEY not in r.stdout + r.stderr for r in s.results)


@scenario
def voxtral_fragment(s: CLISession) -> None:
    wav = samples(s)["wav"]
    s.run("-m", "mistral-small", "-f", f"voxtral:{wav}", "List the action items")
    s.run("-m", "mistral-small", "-f", f"voxtral:{wav}", "Who spoke?")
    s.run("mistral", "transcribe", str(wav))  # the same audio and options: the fragment's transcript
    s.run("-m", "mistral-small", "-f", f"voxtral:{s.user_dir.parent / 'samples' / 'report.pdf'}", "hi")


def test_voxtral_fragment(s):
    first, second, command, pdf = s.results
    assert assert_cli_ok(first) == f"echo: {TEXT}\nList the action items\n"
    assert assert_cli_ok(second) == f"echo: {TEXT}\nWho spoke?\n"
    assert assert_cli_ok(command) == TEXT + "\n"
    assert len(forms(s)) == 1
    assert_cli_error(pdf, "Could not load fragment voxtral:", "not audio")
    assert_no_key_stored(s.user_dir)


@scenario
def speak(s: CLISession) -> None:
    out = s.user_dir.parent / "hello.wav"
    s.run("mistral", "speak", "Hello there, how are you", "-o", str(out))
    s.run("mistral", "speak", "-o", str(s.user_dir.parent / "haiku.mp3"), "--voice", "oliver", "--stream",
          input="An old silent pond\nA frog jumps into the pond\n")
    run_with_bytes(s, b"Hi", "mistral", "speak", "--format", "flac")
    s.run("mistral", "speak", "-", "-o", str(s.user_dir.parent / "empty.mp3"), input="  \n")
    s.run("mistral", "speak", "Hi", "--voice", "nobody", "-o", str(s.user_dir.parent / "nobody.mp3"))
    s.fake.queue(SSEReply([("speech.audio.delta", {"type": "speech.audio.delta", "audio_data": "AAAA"})], done=False))
    s.run("mistral", "speak", "Hi", "--stream", "-o", str(s.user_dir.parent / "cut.mp3"))
    s.run("mistral", "voices")
    s.run("mistral", "voices", "--type", "custom", "--json")


def test_speak(s):
    wav, piped, to_stdout, empty, nobody, cut, voices, custom = s.results
    folder = s.user_dir.parent
    assert "Wrote" in assert_cli_ok(wav) + wav.stderr and audio_info((folder / "hello.wav").read_bytes()).seconds == 2.0
    assert_cli_ok(piped)
    assert (folder / "haiku.mp3").read_bytes().startswith(b"ID3") and not (folder / "haiku.mp3.part").exists()
    assert to_stdout.returncode == 0 and to_stdout.stdout.startswith(b"fLaC")
    assert_cli_error(empty, "Nothing to say")
    assert_cli_error(nobody, "no voice 'nobody'", "llm mistral voices")
    assert_cli_error(cut, "ended before it was finished", "incomplete")
    assert not (folder / "cut.mp3").exists() and not (folder / "cut.mp3.part").exists()  # no short file left
    table = assert_cli_ok(voices).splitlines()
    assert table[0].split() == ["id", "name", "slug", "languages", "gender", "kind"] and len(table) == 5
    assert [v["name"] for v in json.loads(assert_cli_ok(custom))] == ["My Clone"]
    speeches = [rec.body for rec in s.fake.requests if rec.route == "/v1/audio/speech"]
    assert speeches[0] == {"model": "voxtral-mini-tts-latest", "input": "Hello there, how are you",
                           "response_format": "wav"}  # fmt: skip
    assert speeches[1]["input"] == "An old silent pond\nA frog jumps into the pond\n" and speeches[1]["stream"] is True
    assert speeches[1]["voice_id"] == "oliver" and speeches[2]["response_format"] == "flac"


def test_speak_needs_a_file_or_a_pipe(monkeypatch):
    from llm.cli import cli

    import _llm_mistral_suite.audio_commands as commands

    monkeypatch.setattr(commands, "stdout_is_a_terminal", lambda: True)
    result = CliRunner().invoke(cli, ["mistral", "speak", "Hi"])
    assert result.exit_code == 2 and "give -o FILE, or redirect the audio" in result.output


@pytest.mark.parametrize("word", ["New York", "a,b", " "])
def test_context_bias_takes_single_words(word):
    from llm.cli import cli

    result = CliRunner().invoke(cli, ["mistral", "transcribe", "x.wav", "--context-bias", word])
    assert result.exit_code == 2 and "one word per --context-bias" in result.output
