"""The mistral/voxtral-transcribe model through llm's Python API (sync and async) against the fake Mistral, and its
requests with pytest-httpx."""

from __future__ import annotations

import asyncio

import llm
import pytest

from _llm_mistral_suite.errors import MistralSuiteError, StreamCutError
from _llm_mistral_suite.transcription import TRANSCRIBE_TYPES
from api_mock import API, SSE_HEADERS, CutBody, sent_form, sse
from conftest import SENTINEL_KEY
from media_files import wav_bytes, write_samples

TEXT = "Hello and welcome. This is a test recording. The weather is fine today."


@pytest.fixture
def api(fake, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    return fake


@pytest.fixture
def wav(tmp_path):
    return write_samples(tmp_path / "samples")["wav"]


def forms(fake) -> list:
    return [rec for rec in fake.requests if rec.route == "/v1/audio/transcriptions"]


def test_it_is_registered_with_its_alias_and_options():
    model = llm.get_model("voxtral-transcribe")
    assert model.model_id == "mistral/voxtral-transcribe" and llm.get_async_model("voxtral-transcribe")
    assert "audio/mpeg" in model.attachment_types and "application/pdf" not in TRANSCRIBE_TYPES
    assert set(model.Options.model_fields) == {"model", "language", "diarize", "timestamps", "context_bias",
                                               "temperature", "cache"}  # fmt: skip


def test_an_attachment_in_its_transcript_out_with_usage_and_segments(api, wav):
    model = llm.get_model("voxtral-transcribe")
    response = model.prompt(attachments=[llm.Attachment(path=str(wav))], timestamps="segment", language="EN",
                            context_bias="Mistral,Voxtral")
    assert response.text() == TEXT
    assert (response.input_tokens, response.output_tokens) == (32, 22)
    assert response.token_details == {"prompt_audio_seconds": 3} and response.resolved_model == "voxtral-mini-2512"
    assert [s["end"] for s in response.response_json["segments"]] == [1.0, 2.0, 2.5]
    [form] = forms(api)
    assert form.form_value("language") == "en" and form.form["context_bias"] == ["Mistral", "Voxtral"]
    again = model.prompt(attachments=[llm.Attachment(path=str(wav))], timestamps="segment", language="en",
                         context_bias=["Mistral", "Voxtral"])
    assert again.text() == TEXT and again.response_json["cached"] is True and again.input_tokens is None
    assert len(forms(api)) == 1  # the same audio with the same options: from the cache
    model.prompt(attachments=[llm.Attachment(path=str(wav))], timestamps="segment", language="en",
                 context_bias=["Mistral", "Voxtral"], cache=False).text()
    assert len(forms(api)) == 2


def test_streamed_and_diarized(api, wav):
    response = llm.get_model("voxtral-transcribe").prompt(attachments=[llm.Attachment(path=str(wav))], diarize=True,
                                                          model="voxtral-small-latest")
    chunks = list(response)
    assert len(chunks) == 3 and "".join(chunks).splitlines()[1] == "speaker_2: This is a test recording."
    [form] = forms(api)
    assert (form.form_value("model"), form.form_value("stream"), form.form_value("diarize")) == (
        "voxtral-small-latest", "true", "true")


def test_async_twin(api, wav):
    async def run() -> tuple[str, dict]:
        model = llm.get_async_model("voxtral-transcribe")
        response = model.prompt(attachments=[llm.Attachment(content=wav_bytes(1.0), type="audio/wav")])
        pieces = [piece async for piece in response]
        return "".join(pieces), await response.usage()

    text, usage = asyncio.run(run())
    assert text == "Hello and welcome." and usage.input == 13
    [form] = forms(api)
    assert form.files["file"].filename == "stdin.wav"


@pytest.mark.parametrize("kwargs, needle", [
    ({"prompt": "please transcribe"}, "takes no prompt text"),
    ({}, "one audio file at a time; this prompt has 0"),
])  # fmt: skip
def test_wrong_inputs_are_clear_errors(api, kwargs, needle):
    with pytest.raises(MistralSuiteError, match=needle):
        llm.get_model("voxtral-transcribe").prompt(**kwargs).text()
    assert api.requests == []


def test_a_bad_context_bias_word_is_refused():
    with pytest.raises(ValueError, match="single words without spaces or commas, not 'New York'"):
        llm.get_model("voxtral-transcribe").Options(context_bias=["New York"])


# --- the requests themselves (pytest-httpx: nothing leaves the machine) ------------------------------

TRANSCRIPTIONS = f"{API}/audio/transcriptions"
WORDS = [{"type": "transcription_segment", "text": word, "start": start, "end": start + 0.5}
         for word, start in (("Bonjour", 0.0), ("Mistral.", 0.5))]  # fmt: skip
ANSWER = {"model": "voxtral-small-2507", "text": "Bonjour Mistral.", "language": "fr", "segments": WORDS,
          "usage": {"prompt_audio_seconds": 1, "prompt_tokens": 13, "completion_tokens": 4, "total_tokens": 17}}


def test_the_models_options_become_the_form_mistral_takes(httpx_mock, key, wav):
    httpx_mock.add_response(url=TRANSCRIPTIONS, json=ANSWER)
    response = llm.get_model("voxtral-transcribe").prompt(
        attachments=[llm.Attachment(path=str(wav))], model="voxtral-small-latest", language="FR", timestamps="word",
        context_bias="Mistral,Voxtral", temperature=0, stream=False)  # fmt: skip
    assert response.text() == "Bonjour Mistral."
    assert (response.input_tokens, response.output_tokens, response.resolved_model) == (13, 4, "voxtral-small-2507")
    assert response.response_json["segments"] == WORDS and response.token_details == {"prompt_audio_seconds": 1}
    [request] = httpx_mock.get_requests()
    assert request.headers["authorization"] == f"Bearer {key}"
    form, files = sent_form(request)
    assert form == {"model": ["voxtral-small-latest"], "language": ["fr"], "temperature": ["0.0"],
                    "timestamp_granularities[]": ["word"], "context_bias[]": ["Mistral", "Voxtral"]}  # fmt: skip
    assert (files["file"].filename, files["file"].data) == ("speech.wav", wav.read_bytes())


def test_a_cut_stream_is_an_error_and_is_not_cached(httpx_mock, key, wav):
    head = sse(("transcription.text.delta", {"type": "transcription.text.delta", "text": "Bonjour"}), done=False)
    httpx_mock.add_response(url=TRANSCRIPTIONS, headers=SSE_HEADERS, stream=CutBody(head))
    model = llm.get_model("voxtral-transcribe")
    pieces = []
    with pytest.raises(StreamCutError, match="dropped the connection in the middle of the reply"):
        for piece in model.prompt(attachments=[llm.Attachment(path=str(wav))]):
            pieces.append(piece)
    assert pieces == ["Bonjour"]
    events = [("transcription.text.delta", {"type": "transcription.text.delta", "text": "Bonjour Mistral."}),
              ("transcription.done", {**ANSWER, "type": "transcription.done"})]  # fmt: skip
    httpx_mock.add_response(url=TRANSCRIPTIONS, headers=SSE_HEADERS, content=sse(*events, done=False))
    assert model.prompt(attachments=[llm.Attachment(path=str(wav))]).text() == "Bonjour Mistral."
    first, second = (sent_form(request)[0] for request in httpx_mock.get_requests())  # no transcript from the cache
    assert first == second == {"model": ["voxtral-mini-latest"], "stream": ["true"]}
