"""The fragment loaders mistral-ocr: and voxtral: as llm calls them, against the fake Mistral (results cached)."""

from __future__ import annotations

import llm
import pytest

import llm_mistral_suite
from _llm_mistral_suite.errors import MissingKeyError, MistralSuiteError
from _llm_mistral_suite.fragments import ocr_fragment, transcript_fragment
from conftest import SENTINEL_KEY
from media_files import write_samples


@pytest.fixture
def api(fake, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    return fake


@pytest.fixture
def samples(tmp_path):
    return write_samples(tmp_path / "samples")


def test_the_hook_registers_both_prefixes_lazily():
    loaders = {}
    llm_mistral_suite.register_fragment_loaders(lambda prefix, loader: loaders.setdefault(prefix, loader))
    assert set(loaders) == {"mistral-ocr", "voxtral"}
    assert "Mistral's OCR" in loaders["mistral-ocr"].__doc__ and "Voxtral" in loaders["voxtral"].__doc__
    assert set(llm.get_fragment_loaders()) >= {"mistral-ocr", "voxtral"}


def test_a_document_becomes_markdown_once(api, samples):
    fragment = ocr_fragment(str(samples["pdf"]))
    assert isinstance(fragment, llm.Fragment) and fragment.source == f"mistral-ocr:{samples['pdf'].resolve()}"
    assert fragment.startswith("<!-- Page 1 -->\n\nACME Corp\n\nQuarterly report") and "<!-- Page 3 -->" in fragment
    assert ocr_fragment(str(samples["pdf"])) == fragment
    assert len([rec for rec in api.requests if rec.route == "/v1/ocr"]) == 1


def test_a_recording_becomes_its_transcript_once(api, samples):
    fragment = transcript_fragment(str(samples["wav"]))
    assert fragment == "Hello and welcome. This is a test recording. The weather is fine today."
    assert fragment.source == f"voxtral:{samples['wav'].resolve()}"
    url = api.host_file("memo.wav", samples["wav"].read_bytes(), "audio/wav")
    assert transcript_fragment(url).source == f"voxtral:{url}"
    assert transcript_fragment(str(samples["wav"])) == fragment
    assert len([rec for rec in api.requests if rec.route == "/v1/audio/transcriptions"]) == 2  # the URL's is not cached


@pytest.mark.parametrize("loader, argument, error, needle", [
    (ocr_fragment, "", MistralSuiteError, "Name a file or URL after mistral-ocr:"),
    (transcript_fragment, "-", MistralSuiteError, "standard input holds the prompt"),
    (ocr_fragment, "missing.pdf", MistralSuiteError, "No such file: missing.pdf"),
])  # fmt: skip
def test_bad_arguments(api, loader, argument, error, needle):
    with pytest.raises(error, match=needle):
        loader(argument)


def test_without_a_key(fake, monkeypatch, samples):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    with pytest.raises(MissingKeyError, match="llm keys set mistral"):
        ocr_fragment(str(samples["pdf"]))
    assert fake.requests == []


def test_registering_the_loaders_imports_nothing_of_the_package():
    import subprocess
    import sys

    code = ("import sys, llm, llm.cli; before = set(sys.modules); import llm_mistral_suite as hooks; "
            "hooks.register_fragment_loaders(lambda prefix, loader: None); "
            "print(sorted(m for m in set(sys.modules) - before if m.startswith('_llm_mistral_suite')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
