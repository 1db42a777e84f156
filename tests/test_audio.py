"""Voxtral's audio endpoints through the transport: transcription, speech and voices, against the fake Mistral,
and the requests themselves with pytest-httpx."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import pytest

from _llm_mistral_suite.audio import (
    SpeechSettings,
    TranscribeSettings,
    TranscriptDecoder,
    check_audio,
    list_voices,
    speaker_text,
    synthesize,
    transcribe_pieces,
    whole_transcript,
)
from _llm_mistral_suite.errors import MistralSuiteError, StreamCutError
from _llm_mistral_suite.media import Media, read_media
from _llm_mistral_suite.settings import mistral_endpoint
from api_mock import API, SSE_HEADERS, CutBody, sent_form, sse
from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok, json_escaped, validate_request
from fake_mistral import SSEReply, Upload, voice_card
from inprocess import invoke_llm
from media_files import audio_info, wav_bytes, write_samples

TEXT = "Hello and welcome. This is a test recording. The weather is fine today."


@pytest.fixture
def api(fake, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    return fake


@pytest.fixture
def samples(tmp_path):
    return write_samples(tmp_path / "samples")


def transcribe(media: Media, settings: TranscribeSettings, stream: bool) -> tuple[list[str], dict]:
    decoder = TranscriptDecoder(mistral_endpoint(), settings, SENTINEL_KEY)
    pieces = list(transcribe_pieces(media, settings, SENTINEL_KEY, stream, decoder))
    return pieces, decoder.finish()


def forms(fake) -> list:
    return [rec for rec in fake.requests if rec.route == "/v1/audio/transcriptions"]


def test_settings_become_the_form_mistral_takes():
    assert TranscribeSettings().form() == {"model": "voxtral-mini-latest"}
    settings = TranscribeSettings("voxtral-small-latest", "fr", True, "word", ("Mistral", "Voxtral"), 0.2)
    assert settings.form(True) == {  # array fields named as Mistral's SDK names them
        "model": "voxtral-small-latest", "language": "fr", "temperature": "0.2", "diarize": "true",
        "timestamp_granularities[]": ["word"], "context_bias[]": ["Mistral", "Voxtral"], "stream": "true"}
    assert settings.fields() == {  # the spec's names: the cache key
        "model": "voxtral-small-latest", "language": "fr", "temperature": "0.2", "diarize": "true",
        "timestamp_granularities": ["word"], "context_bias": ["Mistral", "Voxtral"]}
    assert TranscribeSettings(diarize=True).form()["timestamp_granularities[]"] == ["segment"]  # speakers need them


def test_a_file_is_sent_as_a_multipart_upload_whole_or_streamed(api, samples):
    media = read_media(str(samples["wav"]))
    pieces, result = transcribe(media, TranscribeSettings(language="en", context_bias=("ACME",)), stream=False)
    assert pieces == [TEXT] and result["text"] == TEXT and result["usage"]["prompt_audio_seconds"] == 3
    pieces, streamed = transcribe(media, TranscribeSettings(timestamps="segment"), stream=True)
    assert pieces == ["Hello and welcome.", " This is a test recording.", " The weather is fine today."]
    assert streamed["text"] == TEXT and [s["end"] for s in streamed["segments"]] == [1.0, 2.0, 2.5]
    whole, stream = forms(api)
    assert whole.files["file"].filename == "speech.wav" and whole.files["file"].data == samples["wav"].read_bytes()
    assert (whole.form_value("language"), whole.form["context_bias"], whole.form_value("stream")) == ("en", ["ACME"], None)
    assert stream.form_value("stream") == "true" and stream.form["timestamp_granularities"] == ["segment"]
    assert [name for name in whole.sent_form if name.startswith("context")] == ["context_bias[]"]  # the SDK's names
    assert [name for name in stream.sent_form if name.startswith("timestamp")] == ["timestamp_granularities[]"]


def test_a_url_goes_as_file_url_and_standard_input_as_a_file(api):
    url = api.host_file("memo.wav", wav_bytes(1.0), "audio/wav")
    pieces, _ = transcribe(read_media(url), TranscribeSettings(), stream=False)
    piped = read_media("-", io.BytesIO(wav_bytes(1.0)))
    transcribe(piped, TranscribeSettings(), stream=True)
    by_url, by_stdin = forms(api)
    assert pieces == ["Hello and welcome."] and by_url.form_value("file_url") == url and not by_url.files
    assert by_stdin.files["file"].filename == "stdin.wav" and by_stdin.files["file"].content_type == "audio/wav"


def test_diarized_text_labels_the_speakers_whole_and_streamed(api, samples):
    media = read_media(str(samples["wav"]))
    expected = ("speaker_1: Hello and welcome.\nspeaker_2: This is a test recording.\n"
                "speaker_1: The weather is fine today.")  # fmt: skip
    pieces, result = transcribe(media, TranscribeSettings(diarize=True), stream=False)
    assert pieces == [expected] and result["segments"][1]["speaker_id"] == "speaker_2"
    pieces, _ = transcribe(media, TranscribeSettings(diarize=True), stream=True)
    assert "".join(pieces) == expected


def test_speaker_text_joins_one_speakers_words():
    words = [{"text": "Hi", "speaker_id": "a"}, {"text": "there.", "speaker_id": "a"}, {"text": "Yes?", "speaker_id": "b"},
             {"text": " ", "speaker_id": "b"}, {"text": "No label"}]  # fmt: skip
    assert speaker_text(words) == "a: Hi there.\nb: Yes?\nNo label"


def test_a_stream_cut_before_done_is_an_error_not_a_short_transcript(api, samples):
    api.queue(SSEReply([("transcription.language", {"type": "transcription.language", "audio_language": "en"}),
                        ("transcription.text.delta", {"type": "transcription.text.delta", "text": "Hello"})],
                       done=False))  # fmt: skip
    decoder = TranscriptDecoder(mistral_endpoint(), TranscribeSettings(), SENTINEL_KEY)
    assert list(transcribe_pieces(read_media(str(samples["wav"])), TranscribeSettings(), SENTINEL_KEY, True,
                                  decoder)) == ["Hello"]
    with pytest.raises(StreamCutError, match="no transcription.done event, after 5 characters"):
        decoder.finish()


def test_an_error_event_mid_stream_is_an_error(api, samples):
    api.queue(SSEReply([("error", {"error": {"message": "audio too long"}})], done=False))
    with pytest.raises(MistralSuiteError, match="reported an error mid-stream: audio too long"):
        transcribe(read_media(str(samples["wav"])), TranscribeSettings(), stream=True)


@pytest.mark.parametrize("event", [
    '{"error": {"message": ' + json_escaped(f"Bad key {SENTINEL_KEY}") + "}}",
    '{"type": "error", "message": ' + json_escaped(f"Bad key {SENTINEL_KEY}") + "}",
    '{"detail": ' + json_escaped(f"{'x' * 170}Bad key {SENTINEL_KEY}"),  # not JSON: quoted, cut at 200
])  # fmt: skip
def test_a_key_json_escaped_in_a_stream_event_is_never_shown(api, samples, event):
    """Redacting before decoding, as the audio streams did, misses a key echoed as \\u0073k-..."""
    api.queue(SSEReply([event], done=False))
    with pytest.raises(MistralSuiteError) as transcribing:
        transcribe(read_media(str(samples["wav"])), TranscribeSettings(), stream=True)
    api.queue(SSEReply([event], done=False))
    with pytest.raises(MistralSuiteError) as speaking:
        synthesize("Hi", SpeechSettings(), SENTINEL_KEY, io.BytesIO(), True)
    for error in (transcribing.value, speaking.value):
        assert "Bad key [key]" in str(error) and SENTINEL_KEY[:8] not in str(error)


@pytest.mark.parametrize("case, needle", [
    ("model", "mistral-large-latest is not a transcription model of Mistral's API"),
    ("undecodable", "could not read {path}: The file could not be decoded as audio"),
    ("url", "could not read https://example.com/a.mp3: Failed to download the file"),
])  # fmt: skip
def test_the_services_refusals_name_the_file_and_what_to_do(api, tmp_path, samples, case, needle):
    junk = tmp_path / "junk.ogg"
    junk.write_bytes(bytes(range(256)) * 8)
    source = {"undecodable": str(junk), "url": "https://example.com/a.mp3"}.get(case, str(samples["wav"]))
    settings = TranscribeSettings(model="mistral-large-latest" if case == "model" else "voxtral-mini-latest")
    with pytest.raises(MistralSuiteError) as caught:
        transcribe(read_media(source), settings, stream=False)
    assert needle.format(path=junk) in caught.value.message
    if case == "undecodable":
        assert "Convert it to MP3, WAV, FLAC, OGG or M4A first (for example `ffmpeg -i junk.ogg out.mp3`)" in str(
            caught.value)


def test_files_that_are_clearly_not_audio_are_refused_before_sending(samples, tmp_path):
    with pytest.raises(MistralSuiteError, match=r"report.pdf is a PDF document \(application/pdf\), not audio"):
        check_audio(read_media(str(samples["pdf"])))
    check_audio(Media("blob", data=b"?", mime=None))  # what cannot be told is left to the service
    check_audio(Media("talk.mp4", data=b"?", mime="video/mp4"))


def test_whole_transcripts_are_cached_by_content_and_settings(api, samples):
    media = read_media(str(samples["wav"]))
    first = whole_transcript(media, TranscribeSettings(), SENTINEL_KEY)
    assert whole_transcript(media, TranscribeSettings(), SENTINEL_KEY) == first
    assert len(forms(api)) == 1
    whole_transcript(media, TranscribeSettings(language="fr"), SENTINEL_KEY)
    assert len(forms(api)) == 2


def test_speech_whole_and_streamed(api):
    whole, streamed = io.BytesIO(), io.BytesIO()
    assert synthesize("Hello there, how are you", SpeechSettings(format="wav"), SENTINEL_KEY, whole, False) == {}
    usage = synthesize("Hello there, how are you", SpeechSettings(voice="oliver", format="wav"), SENTINEL_KEY,
                       streamed, True)
    assert whole.getvalue() == streamed.getvalue() and audio_info(whole.getvalue()).seconds == 2.0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    first, second = (rec.body for rec in api.requests)
    assert first == {"model": "voxtral-mini-tts-latest", "input": "Hello there, how are you", "response_format": "wav"}
    assert second["voice_id"] == "oliver" and second["stream"] is True


def test_a_speech_stream_cut_before_done_is_an_error(api):
    api.queue(SSEReply([("speech.audio.delta", {"type": "speech.audio.delta", "audio_data": "AAAA"})], done=False))
    with pytest.raises(StreamCutError, match=r"no speech.audio.done event, after 3 bytes\). The audio is incomplete"):
        synthesize("Hi", SpeechSettings(), SENTINEL_KEY, io.BytesIO(), True)


@pytest.mark.parametrize("settings, needle", [
    (SpeechSettings(voice="nobody"), "Mistral's API has no voice 'nobody'"),
    (SpeechSettings(model="mistral-large-latest"), "mistral-large-latest is not a speech model"),
])  # fmt: skip
def test_speech_errors(api, settings, needle):
    with pytest.raises(MistralSuiteError, match=needle):
        synthesize("Hi", settings, SENTINEL_KEY, io.BytesIO(), False)


def test_voices_are_listed_across_pages(api):
    api.voices = [voice_card(f"2f7a1c9e-8b3d-4e6f-a5c2-{n:012d}", f"Voice {n}", ["en"], "female") for n in range(230)]
    voices = list_voices(SENTINEL_KEY)
    assert [v["name"] for v in voices] == [f"Voice {n}" for n in range(230)]
    assert [rec.query["offset"] for rec in api.requests] == [["0"], ["100"], ["200"]]
    assert len(list_voices(SENTINEL_KEY, "custom")) == 0


# --- the requests themselves (pytest-httpx: nothing leaves the machine) ------------------------------

TRANSCRIPTIONS, SPEECH = f"{API}/audio/transcriptions", f"{API}/audio/speech"
SEGMENTS = [{"type": "transcription_segment", "text": text, "start": start, "end": end, "speaker_id": speaker}
            for text, start, end, speaker in (("Hello and welcome.", 0.0, 1.0, "speaker_1"),
                                              ("This is a test.", 1.0, 2.5, "speaker_2"))]  # fmt: skip
TRANSCRIPT = {"model": "voxtral-mini-2507", "text": "Hello and welcome. This is a test.", "language": "en",
              "segments": SEGMENTS, "usage": {"prompt_audio_seconds": 3, "prompt_tokens": 32, "completion_tokens": 9,
                                              "total_tokens": 41}}  # fmt: skip
TRANSCRIPT_EVENTS = [
    ("transcription.language", {"type": "transcription.language", "audio_language": "en"}),
    ("transcription.text.delta", {"type": "transcription.text.delta", "text": "Hello and welcome."}),
    ("transcription.segment", {**SEGMENTS[0], "type": "transcription.segment"}),
    ("transcription.text.delta", {"type": "transcription.text.delta", "text": " This is a test."}),
    ("transcription.segment", {**SEGMENTS[1], "type": "transcription.segment"}),
    ("transcription.done", {**TRANSCRIPT, "type": "transcription.done"}),
]


def test_a_file_goes_as_multipart_with_each_array_value_under_name_brackets(httpx_mock, samples):
    httpx_mock.add_response(url=TRANSCRIPTIONS, json=TRANSCRIPT)
    settings = TranscribeSettings(language="en", diarize=True, context_bias=("Mistral", "Voxtral"), temperature=0.2)
    pieces, result = transcribe(read_media(str(samples["wav"])), settings, stream=False)
    assert pieces == ["speaker_1: Hello and welcome.\nspeaker_2: This is a test."] and result == TRANSCRIPT
    [request] = httpx_mock.get_requests()
    assert request.method == "POST" and request.headers["authorization"] == f"Bearer {SENTINEL_KEY}"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    form, files = sent_form(request)
    assert form == {"model": ["voxtral-mini-latest"], "language": ["en"], "temperature": ["0.2"], "diarize": ["true"],
                    "timestamp_granularities[]": ["segment"], "context_bias[]": ["Mistral", "Voxtral"]}  # fmt: skip
    assert files == {"file": Upload("speech.wav", "audio/wav", samples["wav"].read_bytes())}


def test_a_url_goes_as_file_url_without_a_file_part(httpx_mock):
    httpx_mock.add_response(url=TRANSCRIPTIONS, json={**TRANSCRIPT, "segments": []})
    url = "https://example.com/talk.mp3"  # only named in the form: the service would fetch it, nobody here does
    pieces, _ = transcribe(read_media(url), TranscribeSettings(timestamps="word", context_bias=("ACME",)), stream=False)
    assert pieces == [TRANSCRIPT["text"]]
    [request] = httpx_mock.get_requests()
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form, files = sent_form(request)
    assert files == {} and form == {"model": ["voxtral-mini-latest"], "timestamp_granularities[]": ["word"],
                                    "context_bias[]": ["ACME"], "file_url": [url]}  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
def test_a_429_is_retried_after_its_retry_after_with_the_whole_file_again(httpx_mock, samples, stream):
    answered: list[float] = []

    def answer(response: httpx.Response):
        def callback(request: httpx.Request) -> httpx.Response:
            answered.append(time.monotonic())
            return response

        return callback

    busy = httpx.Response(429, headers={"Retry-After": "0.3"},
                          json={"object": "error", "message": "Requests rate limit exceeded", "code": "3505"})
    done = (httpx.Response(200, headers=SSE_HEADERS, content=sse(*TRANSCRIPT_EVENTS, done=False)) if stream
            else httpx.Response(200, json=TRANSCRIPT))  # fmt: skip
    httpx_mock.add_callback(answer(busy), url=TRANSCRIPTIONS)
    httpx_mock.add_callback(answer(done), url=TRANSCRIPTIONS)
    pieces, result = transcribe(read_media(str(samples["wav"])), TranscribeSettings(), stream)
    assert "".join(pieces) == TRANSCRIPT["text"] and result["usage"] == TRANSCRIPT["usage"]
    assert 0.3 <= answered[1] - answered[0] < 2.0  # the backoff alone would be <= 0.01 s here
    first, second = (sent_form(request) for request in httpx_mock.get_requests())
    assert first == second and second[1]["file"].data == samples["wav"].read_bytes()  # the file rewound, sent whole
    assert second[0].get("stream") == (["true"] if stream else None)


def test_the_streamed_transcription_is_read_event_by_event(httpx_mock, samples):
    httpx_mock.add_response(url=TRANSCRIPTIONS, headers=SSE_HEADERS, content=sse(*TRANSCRIPT_EVENTS, done=False))
    settings = TranscribeSettings(timestamps="segment", context_bias=("Voxtral",))
    pieces, result = transcribe(read_media(str(samples["wav"])), settings, stream=True)
    assert pieces == ["Hello and welcome.", " This is a test."]
    assert result == TRANSCRIPT  # the done event, its type dropped
    [request] = httpx_mock.get_requests()
    assert request.headers["accept"] == "text/event-stream"
    form, files = sent_form(request)  # checked against the streaming form's schema
    assert form == {"model": ["voxtral-mini-latest"], "timestamp_granularities[]": ["segment"],
                    "context_bias[]": ["Voxtral"], "stream": ["true"]}  # fmt: skip
    assert files["file"].data == samples["wav"].read_bytes()


@pytest.mark.parametrize("body, error", [
    ({"content": sse(*TRANSCRIPT_EVENTS[:3], done=False)},
     r"ended before it was finished \(no transcription.done event, after 18 characters\)"),
    ({"stream": CutBody(sse(*TRANSCRIPT_EVENTS[:3], done=False))},
     r"dropped the connection in the middle of the reply \(Connection reset by peer\)"),
], ids=["ended early", "connection lost"])  # fmt: skip
def test_a_cut_transcription_stream_is_an_error_not_a_short_transcript(httpx_mock, samples, body, error):
    httpx_mock.add_response(url=TRANSCRIPTIONS, headers=SSE_HEADERS, **body)
    decoder = TranscriptDecoder(mistral_endpoint(), TranscribeSettings(), SENTINEL_KEY)
    pieces = []
    with pytest.raises(StreamCutError, match=error):
        for piece in transcribe_pieces(read_media(str(samples["wav"])), TranscribeSettings(), SENTINEL_KEY, True,
                                       decoder):
            pieces.append(piece)
        decoder.finish()
    assert pieces == ["Hello and welcome."] and decoder.result is None
    assert len(httpx_mock.get_requests()) == 1  # never retried once text has arrived


@pytest.mark.parametrize("output, options, response_format", [
    ("hello.wav", [], "wav"),
    ("hello.FLAC", [], "flac"),
    ("hello.audio", [], "mp3"),  # not a speech format: the default
    ("hello.wav", ["--format", "opus"], "opus"),  # --format wins over the name
])  # fmt: skip
def test_speech_asks_for_the_format_the_output_name_says(httpx_mock, key, tmp_path, output, options,
                                                         response_format):
    audio = wav_bytes(0.25)
    httpx_mock.add_response(url=SPEECH, json={"audio_data": base64.b64encode(audio).decode()})
    out = tmp_path / output
    result = invoke_llm("mistral", "speak", "Hello there", "-o", str(out), "--voice", "oliver", *options)
    assert assert_cli_ok(result) == ""
    assert result.stderr == f"Wrote {out} ({len(audio):,} bytes of {response_format})\n"
    assert out.read_bytes() == audio and not out.with_name(out.name + ".part").exists()
    [request] = httpx_mock.get_requests()
    body = json.loads(request.content)
    validate_request(body, "SpeechRequest")
    assert body == {"model": "voxtral-mini-tts-latest", "input": "Hello there", "response_format": response_format,
                    "voice_id": "oliver"}  # fmt: skip
    assert request.headers["authorization"] == f"Bearer {key}"


def speech_events(audio: bytes, size: int) -> list[tuple[str, dict]]:
    """``audio`` as speech.audio.delta events of ``size`` bytes each."""
    return [("speech.audio.delta", {"type": "speech.audio.delta",
                                    "audio_data": base64.b64encode(audio[start:start + size]).decode()})
            for start in range(0, len(audio), size)]  # fmt: skip


def test_a_streamed_speech_is_written_completely(httpx_mock, key, tmp_path):
    audio = wav_bytes(0.5)
    usage = {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    events = [*speech_events(audio, 1000), ("speech.audio.done", {"type": "speech.audio.done", "usage": usage})]
    httpx_mock.add_response(url=SPEECH, headers=SSE_HEADERS, content=sse(*events, done=False))
    out = tmp_path / "streamed.wav"
    assert assert_cli_ok(invoke_llm("mistral", "speak", "Hello there", "--stream", "-o", str(out))) == ""
    assert len(events) == 10 and out.read_bytes() == audio and not (tmp_path / "streamed.wav.part").exists()
    [request] = httpx_mock.get_requests()
    body = json.loads(request.content)
    validate_request(body, "SpeechRequest")
    assert body == {"model": "voxtral-mini-tts-latest", "input": "Hello there", "response_format": "wav",
                    "stream": True}  # fmt: skip
    assert request.headers["accept"] == "text/event-stream"


def test_a_cut_speech_stream_leaves_no_file(httpx_mock, key, tmp_path):
    head = sse(*speech_events(wav_bytes(0.5), 1000)[:3], done=False)
    httpx_mock.add_response(url=SPEECH, headers=SSE_HEADERS, stream=CutBody(head))
    out = tmp_path / "cut.wav"
    result = invoke_llm("mistral", "speak", "Hello there", "--stream", "-o", str(out))
    assert_cli_error(result, "dropped the connection in the middle of the reply")
    assert not out.exists() and not (tmp_path / "cut.wav.part").exists() and len(httpx_mock.get_requests()) == 1


def test_voices_are_listed_page_by_page_and_shown_as_a_table(httpx_mock, key):
    cards = [voice_card(f"2f7a1c9e-8b3d-4e6f-a5c2-{n:012d}", name, ["en", "fr"], "female")
             for n, name in enumerate(["Amelie", "Brigitte", "Chloe"])]  # fmt: skip
    for offset, items in ((0, cards[:2]), (2, cards[2:])):  # a server whose pages are smaller than the limit asked
        httpx_mock.add_response(url=f"{API}/audio/voices?limit=100&offset={offset}&type=preset",
                                json={"items": items, "total": 3, "page": offset // 2, "page_size": 2,
                                      "total_pages": 2})  # fmt: skip
    assert list_voices(key, "preset") == cards
    assert [r.headers["authorization"] for r in httpx_mock.get_requests()] == [f"Bearer {key}"] * 2
    httpx_mock.add_response(url=f"{API}/audio/voices?limit=100&offset=0&type=all",
                            json={"items": cards[:1], "total": 1, "page": 0, "page_size": 100, "total_pages": 1})
    assert assert_cli_ok(invoke_llm("mistral", "voices")).splitlines() == [
        "id                                    name    slug    languages  gender  kind",
        "2f7a1c9e-8b3d-4e6f-a5c2-000000000000  Amelie  amelie  en, fr     female  preset",
    ]
