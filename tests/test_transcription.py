"""The mistral/voxtral-transcribe model through llm's Python API (sync and async) against the fake Mistral."""

from __future__ import annotations

import asyncio

import llm
import pytest

from _llm_mistral_suite.errors import MistralSuiteError
from _llm_mistral_suite.transcription import TRANSCRIBE_TYPES
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
