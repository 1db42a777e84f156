"""What users point at (a file, a URL or standard input), its type and digest, and the cache of paid results."""

from __future__ import annotations

import hashlib
import io
import zipfile

import llm
import pytest

from _llm_mistral_suite.errors import MistralSuiteError
from _llm_mistral_suite.media import (
    OFFICE_TYPES,
    STDIN_NAME,
    Media,
    ResultCache,
    describe_type,
    media_from_attachment,
    read_media,
    rejected_input,
    sniff_type,
)
from media_files import pdf_bytes, png_bytes, wav_bytes


def test_a_file_is_named_as_given_sniffed_and_streamed(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf_bytes(["one", "two"]))
    media = read_media(str(path))
    assert (media.name, media.path, media.url, media.data) == (str(path), path, None, None)
    assert media.mime == "application/pdf" and media.size == path.stat().st_size and media.filename == "report.pdf"
    assert media.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert media.data_uri().startswith("data:application/pdf;base64,JVBERi0x")  # %PDF-1


@pytest.mark.parametrize("name, data, mime", [
    ("a.png", png_bytes(), "image/png"),
    ("a.wav", wav_bytes(0.1), "audio/wav"),
    ("a.mp3", b"ID3\x04" + bytes(200), "audio/mpeg"),
    ("notes.txt", b"plain words", "text/plain"),  # by its name: the bytes say nothing
    ("blob", bytes(range(256)) * 4, None),
])  # fmt: skip
def test_types_come_from_the_bytes_else_the_name(name, data, mime):
    assert sniff_type(data, name) == mime


def test_office_files_are_told_apart_by_their_extension():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<w/>")
    for suffix, mime in OFFICE_TYPES.items():
        assert sniff_type(out.getvalue(), f"letter{suffix}") == mime


def test_a_url_is_left_for_the_service_and_standard_input_is_read_now():
    url = read_media("https://example.com/docs/q3.pdf?download=1")
    assert (url.url, url.mime, url.filename, url.size) == ("https://example.com/docs/q3.pdf?download=1",
                                                           "application/pdf", "q3.pdf", None)
    with pytest.raises(ValueError):
        url.open()
    piped = read_media("-", io.BytesIO(png_bytes()))
    assert (piped.name, piped.mime, piped.filename) == (STDIN_NAME, "image/png", "stdin.png")
    assert piped.open().read() == png_bytes()


@pytest.mark.parametrize("spec, needle", [("missing.pdf", "No such file: missing.pdf"), (".", "is a directory")])
def test_missing_files_and_directories_are_clear_errors(spec, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MistralSuiteError, match=needle):
        read_media(spec)


def test_empty_files_and_empty_standard_input_are_refused(tmp_path):
    (tmp_path / "empty.pdf").write_bytes(b"")
    with pytest.raises(MistralSuiteError, match="is empty"):
        read_media(str(tmp_path / "empty.pdf"))
    with pytest.raises(MistralSuiteError, match="Nothing arrived on standard input"):
        read_media("-", io.BytesIO(b""))


def test_attachments_become_media_with_their_declared_type(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes(0.1))
    assert media_from_attachment(llm.Attachment(path=str(path))).mime == "audio/wav"
    assert media_from_attachment(llm.Attachment(type="audio/x-wav", path=str(path))).mime == "audio/x-wav"
    assert media_from_attachment(llm.Attachment(url="https://e.com/a.mp3", type="audio/mpeg")).url == "https://e.com/a.mp3"
    content = media_from_attachment(llm.Attachment(content=wav_bytes(0.1)))
    assert (content.name, content.mime) == (STDIN_NAME, "audio/wav")


def test_describe_type():
    assert describe_type("application/pdf") == "a PDF document (application/pdf)"
    assert describe_type("image/png") == "an image (image/png)"
    assert describe_type(None) == "of a type it cannot tell"


def test_the_cache_keys_on_content_and_settings_never_on_a_url(tmp_path):
    first, second = tmp_path / "a.pdf", tmp_path / "b.pdf"
    first.write_bytes(pdf_bytes(["same"]))
    second.write_bytes(pdf_bytes(["same"]))
    cache = ResultCache("ocr")
    key = cache.key(read_media(str(first)), {"model": "m"})
    assert key == cache.key(read_media(str(second)), {"model": "m"})  # same bytes, another name: same result
    assert key != cache.key(read_media(str(first)), {"model": "m", "pages": [0]})
    assert cache.key(read_media("https://e.com/a.pdf"), {"model": "m"}) is None
    assert cache.get(key) is None
    cache.put(key, {"pages": []})
    assert cache.get(key) == {"pages": []}
    assert (llm.user_dir() / "mistral-suite-cache" / "ocr" / f"{key}.json").exists()
    (cache.directory / f"{key}.json").write_text("{broken")
    assert cache.get(key) is None  # a damaged entry is a miss, never an error
    cache.put(None, {"pages": []})  # nothing to key on: nothing stored


def test_an_unwritable_cache_is_skipped_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a directory")
    ResultCache("ocr").put("k", {"pages": []})
    assert capsys.readouterr().err.startswith("Warning: Cannot create ")


def test_a_cache_entry_that_cannot_be_written_costs_a_warning_not_the_result(capsys):
    """write_json_atomic raises MistralSuiteError, not OSError: it used to escape after the paid request."""
    cache = ResultCache("ocr")
    (cache.directory / "k.json").mkdir(parents=True)
    cache.put("k", {"pages": []})
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("Warning: Cannot write ") and line.endswith("it is a directory. The result was not cached.")


def test_rejected_input_names_the_file_only_for_the_inputs_own_faults():
    media = Media("scan.tiff", data=b"x")
    bad = MistralSuiteError("Mistral's API rejected the request (400): broken", status=400, detail="broken file.")
    assert rejected_input(media, "Mistral's OCR", bad, "Try again.").message == (
        "Mistral's OCR could not read scan.tiff: broken file. Try again."
    )
    large = MistralSuiteError("x", status=413, detail="File size exceeds the maximum")
    assert "too large for the service" in rejected_input(media, "Mistral's OCR", large).message
    key_error = MistralSuiteError("Mistral's API rejected the API key (401 Unauthorized).", status=401)
    assert rejected_input(media, "Mistral's OCR", key_error) is key_error
