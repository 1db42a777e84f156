"""Mistral's /v1/files through the transport: uploads streamed with retries, signed URLs, downloads, deletes; against
the fake Mistral, and the requests themselves with pytest-httpx."""

from __future__ import annotations

import io

import pytest

from _llm_mistral_suite.errors import MistralSuiteError
from _llm_mistral_suite.files import (
    MAX_FILE_BYTES,
    UploadedFile,
    delete_file,
    download_content,
    signed_url,
    temporary_upload,
    upload_file,
)
from api_mock import API, sent_form
from conftest import SENTINEL_KEY
from fake_mistral import Upload, error_reply


@pytest.fixture
def api(fake, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    return fake


def test_upload_from_path_bytes_and_file_then_download_and_delete(api, tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b'{"custom_id": "1", "body": {}}\n')
    first = upload_file(SENTINEL_KEY, path, "lines.jsonl", "batch", "application/jsonl")
    second = upload_file(SENTINEL_KEY, b"%PDF-1.4 tiny", "a.pdf", "ocr", "application/pdf")
    third = upload_file(SENTINEL_KEY, io.BytesIO(b"abc"), "c.bin", "ocr")
    assert first.size == path.stat().st_size and second.size == 13 and third.size == 3
    assert first.id != second.id and first.purpose == "batch"
    out = io.BytesIO()
    assert download_content(SENTINEL_KEY, second.id, out) == 13 and out.getvalue() == b"%PDF-1.4 tiny"
    url = signed_url(SENTINEL_KEY, second.id)
    assert url.startswith("http://127.0.0.1:") and SENTINEL_KEY not in url
    delete_file(SENTINEL_KEY, second.id)
    assert second.id not in {f.id for f in api.uploads} and api.delete_count == 1
    uploads = [rec for rec in api.requests if rec.method == "POST" and rec.route == "/v1/files"]
    assert [rec.form_value("purpose") for rec in uploads] == ["batch", "ocr", "ocr"]
    assert uploads[0].files["file"].data == path.read_bytes()
    assert all(rec.headers["authorization"] == f"Bearer {SENTINEL_KEY}" for rec in api.requests)


def test_an_upload_retried_after_a_503_sends_the_whole_file_again(api):
    api.queue(error_reply(503, "busy"))
    source = io.BytesIO(b"x" * 5000)
    uploaded = upload_file(SENTINEL_KEY, source, "big.bin", "ocr")
    uploads = [rec for rec in api.requests if rec.method == "POST" and rec.route == "/v1/files"]
    assert len(uploads) == 2 and uploads[1].files["file"].data == b"x" * 5000
    assert api.files[uploaded.id].data == b"x" * 5000


def test_temporary_upload_is_deleted_even_when_the_block_fails(api):
    with pytest.raises(RuntimeError):
        with temporary_upload(SENTINEL_KEY, b"data", "t.pdf", "ocr") as uploaded:
            assert uploaded.id in {f.id for f in api.uploads}
            raise RuntimeError("inside")
    assert api.uploads == [] and api.delete_count == 1


def test_too_big_is_refused_before_sending(api, monkeypatch):
    class Huge(io.BytesIO):
        def seek(self, offset, whence=0):
            return MAX_FILE_BYTES + 1 if whence == 2 else super().seek(offset, whence)

    with pytest.raises(MistralSuiteError, match="at most 512 MB"):
        upload_file(SENTINEL_KEY, Huge(b"x"), "huge.pdf", "ocr")
    assert api.requests == []


def test_missing_file_id_is_a_clear_error(api):
    with pytest.raises(MistralSuiteError, match="404"):
        download_content(SENTINEL_KEY, "00000000-0000-4000-8000-000000000000", io.BytesIO())


# --- the requests themselves (pytest-httpx: nothing leaves the machine) ------------------------------

FILE_ID = "5d1c7f2a-3b4e-4c6d-8e9f-0a1b2c3d4e5f"


def stored(filename: str, size: int, purpose: str) -> dict:
    """The answer to an upload (``CreateFileResponse``)."""
    return {"id": FILE_ID, "object": "file", "bytes": size, "created_at": 1767225600, "filename": filename,
            "purpose": purpose, "sample_type": "instruct", "source": "upload"}  # fmt: skip


def test_an_upload_sends_the_file_and_its_purpose(httpx_mock, tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4 two pages")
    httpx_mock.add_response(method="POST", url=f"{API}/files", json=stored("report.pdf", 18, "ocr"))
    uploaded = upload_file(SENTINEL_KEY, path, "report.pdf", "ocr", "application/pdf")
    assert uploaded == UploadedFile(FILE_ID, "report.pdf", 18, "ocr")
    [request] = httpx_mock.get_requests()
    assert request.headers["authorization"] == f"Bearer {SENTINEL_KEY}"
    assert sent_form(request) == ({"purpose": ["ocr"]},
                                  {"file": Upload("report.pdf", "application/pdf", b"%PDF-1.4 two pages")})


@pytest.mark.parametrize("asked, hours", [({}, 24), ({"expiry_hours": 1}, 1)])  # 24 h by default; chat asks 1 h
def test_a_signed_url_is_asked_for_with_its_expiry(httpx_mock, asked, hours):
    signed = f"https://files.example.com/{FILE_ID}?signature=abc"  # what pytest-httpx answers: never fetched
    httpx_mock.add_response(method="GET", url=f"{API}/files/{FILE_ID}/url?expiry={hours}", json={"url": signed})
    assert signed_url(SENTINEL_KEY, FILE_ID, **asked) == signed
    [request] = httpx_mock.get_requests()
    assert request.content == b"" and request.headers["authorization"] == f"Bearer {SENTINEL_KEY}"


def test_the_upload_is_deleted_even_when_the_next_step_fails(httpx_mock, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_MAX_ATTEMPTS", "2")
    httpx_mock.add_response(method="POST", url=f"{API}/files", json=stored("t.pdf", 4, "ocr"))
    httpx_mock.add_response(method="GET", url=f"{API}/files/{FILE_ID}/url?expiry=24", status_code=503,
                            json={"object": "error", "message": "Service unavailable"}, is_reusable=True)
    httpx_mock.add_response(method="DELETE", url=f"{API}/files/{FILE_ID}",
                            json={"id": FILE_ID, "object": "file", "deleted": True})
    with pytest.raises(MistralSuiteError, match="503.*after 2 attempts"):
        with temporary_upload(SENTINEL_KEY, b"data", "t.pdf", "ocr") as uploaded:
            signed_url(SENTINEL_KEY, uploaded.id)
    sent = [(request.method, request.url.path) for request in httpx_mock.get_requests()]
    assert sent == [("POST", "/v1/files"), *[("GET", f"/v1/files/{FILE_ID}/url")] * 2,
                    ("DELETE", f"/v1/files/{FILE_ID}")]  # fmt: skip
