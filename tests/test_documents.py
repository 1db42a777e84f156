"""OCR through the transport against the fake Mistral: inline, by URL or uploaded; the cache; the Markdown; errors."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import llm
import pytest
from llm.parts import AttachmentPart, Message, TextPart

from _llm_mistral_suite import documents
from _llm_mistral_suite.documents import (
    OCRSettings,
    delete_uploads,
    document_annotation,
    ocr_document,
    ocr_markdown,
    parse_pages,
    save_images,
    upload_large_documents,
)
from _llm_mistral_suite.errors import MistralSuiteError
from _llm_mistral_suite.media import read_media
from _llm_mistral_suite.progress import Progress
from conftest import SENTINEL_KEY, validate_request
from fake_mistral import error_reply
from media_files import SAMPLE_PAGES, pdf_bytes, png_bytes, write_samples

REPORT = pdf_bytes(SAMPLE_PAGES, header="ACME Corp", footer="Page {n}", images_on=[1])


@pytest.fixture
def api(fake, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    return fake


@pytest.fixture
def samples(tmp_path):
    return write_samples(tmp_path / "samples")


def ocr_bodies(fake) -> list[dict]:
    return [rec.body for rec in fake.requests if rec.route == "/v1/ocr"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pages_are_zero_based_indexes_and_ranges():
    assert parse_pages("0,2-4") == (0, 2, 3, 4)
    assert parse_pages(" 3 , 1-2, 3") == (3, 1, 2)
    for bad in ("x", "1-", "4-2", ""):
        with pytest.raises(ValueError):
            parse_pages(bad)


def test_every_setting_is_a_valid_request_field():
    settings = OCRSettings(model="mistral-ocr-2512", pages=(0, 2), table_format="html", header=True, footer=True,
                           images=True, schema={"type": "object", "properties": {"total": {"type": "number"}}},
                           annotation_prompt="The invoice total")  # fmt: skip
    body = {**settings.request_fields(), "document": {"type": "document_url", "document_url": "https://e.com/a.pdf"}}
    validate_request(body, "OCRRequest")
    assert body["pages"] == [0, 2] and body["include_image_base64"] and body["extract_header"]
    assert body["document_annotation_format"]["json_schema"]["schema"]["additionalProperties"] is False
    assert OCRSettings().request_fields() == {"model": "mistral-ocr-latest"}  # defaults are not sent


def test_a_small_pdf_goes_inline_and_the_second_read_comes_from_the_cache(api, samples):
    media = read_media(str(samples["pdf"]))
    first = ocr_document(media, OCRSettings(), SENTINEL_KEY)
    [body] = ocr_bodies(api)
    assert body["document"]["type"] == "document_url" and body["document"]["document_name"] == "report.pdf"
    assert base64.b64decode(body["document"]["document_url"].split(",", 1)[1]) == samples["pdf"].read_bytes()
    assert [page["index"] for page in first["pages"]] == [0, 1, 2]
    assert ocr_document(media, OCRSettings(), SENTINEL_KEY) == first
    assert len(ocr_bodies(api)) == 1  # a cache hit: no second request
    ocr_document(media, OCRSettings(pages=(1,)), SENTINEL_KEY)  # other settings, another result
    ocr_document(media, OCRSettings(), SENTINEL_KEY, use_cache=False)
    assert len(ocr_bodies(api)) == 3
    cached = b"".join(path.read_bytes() for path in (llm.user_dir() / "mistral-suite-cache").rglob("*.json"))
    assert b"Quarterly report" in cached and SENTINEL_KEY.encode() not in cached


def test_images_go_as_image_chunks_and_urls_as_they_are(api, samples):
    scan = ocr_document(read_media(str(samples["png"])), OCRSettings(), SENTINEL_KEY)
    assert scan["pages"][0]["markdown"] == "Hello from a scan"
    url = api.host_file("q3.pdf", REPORT, "application/pdf")
    image_url = api.host_file("scan.png", png_bytes(text="hosted"), "image/png")
    ocr_document(read_media(url), OCRSettings(), SENTINEL_KEY)
    ocr_document(read_media(url), OCRSettings(), SENTINEL_KEY)  # a URL's content may change: never cached
    hosted = ocr_document(read_media(image_url), OCRSettings(), SENTINEL_KEY)
    inline, by_url, again, image = (body["document"] for body in ocr_bodies(api))
    assert inline["type"] == "image_url" and inline["image_url"].startswith("data:image/png;base64,")
    assert by_url == again == {"type": "document_url", "document_url": url}
    assert image == {"type": "image_url", "image_url": image_url} and hosted["pages"][0]["markdown"] == "hosted"


def test_a_large_document_is_uploaded_read_by_file_id_then_deleted(api, samples, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_INLINE_LIMIT_MB", "0.001")  # 1 kB: the report is larger
    terminal = Terminal()
    result = ocr_document(read_media(str(samples["pdf"])), OCRSettings(), SENTINEL_KEY,
                          progress=Progress(terminal, enabled=True))
    assert len(result["pages"]) == 3
    upload = next(rec for rec in api.requests if rec.route == "/v1/files")
    assert upload.form_value("purpose") == "ocr" and upload.files["file"].data == samples["pdf"].read_bytes()
    assert upload.files["file"].filename == "report.pdf" and upload.files["file"].content_type == "application/pdf"
    [body] = ocr_bodies(api)
    [delete] = [rec for rec in api.requests if rec.method == "DELETE"]
    assert body["document"] == {"type": "file", "file_id": delete.route.rsplit("/", 1)[1]}
    assert api.uploads == [] and api.delete_count == 1
    shown = terminal.getvalue()
    assert "Uploading " in shown and f"100% ({len(REPORT) / 1e3:.1f} kB of {len(REPORT) / 1e3:.1f} kB)" in shown and "3 pages read by mistral-ocr-2512" in shown


def test_the_upload_is_deleted_even_when_the_ocr_fails(api, samples, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_INLINE_LIMIT_MB", "0.001")
    with pytest.raises(MistralSuiteError, match="out of range"):
        ocr_document(read_media(str(samples["pdf"])), OCRSettings(pages=(9,)), SENTINEL_KEY)
    assert api.upload_count == 1 and api.uploads == [] and api.delete_count == 1


def test_an_upload_over_the_service_limit_names_the_file(api, samples, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_INLINE_LIMIT_MB", "0.001")
    api.max_upload_bytes = 1000
    with pytest.raises(MistralSuiteError) as caught:
        ocr_document(read_media(str(samples["pdf"])), OCRSettings(), SENTINEL_KEY)
    message = caught.value.message
    assert message.startswith(f"Mistral's OCR could not read {samples['pdf']}: File size (")
    assert "too large for the service: split it" in message and SENTINEL_KEY not in message


def test_unsupported_and_oversized_files_are_refused_before_sending(api, samples, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("just words")
    with pytest.raises(MistralSuiteError, match=r"notes.txt is text \(text/plain\): Mistral's OCR reads a PDF"):
        ocr_document(read_media(str(tmp_path / "notes.txt")), OCRSettings(), SENTINEL_KEY)
    with pytest.raises(MistralSuiteError, match="use `llm mistral transcribe`"):
        ocr_document(read_media(str(samples["wav"])), OCRSettings(), SENTINEL_KEY)
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 1000)
    with pytest.raises(MistralSuiteError, match=r"at most 0 MB \(and 1,000 pages\). Split it"):
        ocr_document(read_media(str(samples["pdf"])), OCRSettings(), SENTINEL_KEY)
    assert api.requests == []


@pytest.mark.parametrize("case, needle", [
    ("model", "mistral-large-latest is not an OCR model of Mistral's API"),
    ("pages", "Page index 5 is out of range: the document has 3 pages. --pages counts from 0"),
    ("url", "could not read https://example.com/r.pdf: Failed to download"),
    ("junk", "could not read {junk}: Document is not a valid PDF. Check that it is a readable file"),
])  # fmt: skip
def test_the_services_refusals_name_the_file_and_what_to_do(api, samples, tmp_path, case, needle):
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"this is not a PDF at all")
    source = {"url": "https://example.com/r.pdf", "junk": str(junk)}.get(case, str(samples["pdf"]))
    settings = OCRSettings(model="mistral-large-latest") if case == "model" else OCRSettings(
        pages=(5,) if case == "pages" else None)
    with pytest.raises(MistralSuiteError) as caught:
        ocr_document(read_media(source), settings, SENTINEL_KEY)
    assert needle.format(junk=junk) in caught.value.message


def test_an_answer_without_pages_is_an_error(httpx_mock, key, samples):
    httpx_mock.add_response(url="https://api.mistral.ai/v1/ocr", json={"model": "mistral-ocr-2512"})  # pytest-httpx: nothing leaves the machine
    with pytest.raises(MistralSuiteError, match="answered without pages"):
        ocr_document(read_media(str(samples["pdf"])), OCRSettings(), key)
    validate_request(json.loads(httpx_mock.get_requests()[0].content), "OCRRequest")


def test_markdown_marks_pages_and_puts_tables_headers_and_images_in_place(api, samples, tmp_path):
    settings = OCRSettings(pages=(1, 2), table_format="html", header=True, footer=True, images=True)
    result = ocr_document(read_media(str(samples["pdf"])), settings, SENTINEL_KEY)
    written = save_images(result, tmp_path / "images")
    assert list(written) == [(0, "img-0.jpeg")] and (tmp_path / "images" / "img-0.jpeg").read_bytes()[:4] == b"\x89PNG"
    markdown = ocr_markdown(result, written)
    assert markdown == (
        "<!-- Page 2 -->\n\n<!-- Header: ACME Corp -->\n\n"
        "<table><tr><th>Region</th><th>Revenue</th></tr><tr><td>North</td><td>120</td></tr>"
        "<tr><td>South</td><td>95</td></tr></table>\n\nFigures are in thousands.\n\n"
        f"![img-0.jpeg]({written[0, 'img-0.jpeg']})\n\n<!-- Footer: Page 2 -->\n\n"
        "<!-- Page 3 -->\n\n<!-- Header: ACME Corp -->\n\nConclusion\n\nThe outlook is stable.\n\n"
        "<!-- Footer: Page 3 -->"
    )
    plain = ocr_markdown(ocr_document(read_media(str(samples["pdf"])), OCRSettings(table_format="markdown"),
                                      SENTINEL_KEY))
    assert "| North | 120 |" in plain and "[tbl-0.md]" not in plain and "![img-0.jpeg](img-0.jpeg)" in plain


def test_an_image_id_seen_on_two_pages_gets_two_files(tmp_path):
    png = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    pages = [{"index": i, "markdown": "![img-0.jpeg](img-0.jpeg)", "images": [{"id": "img-0.jpeg", "image_base64": png}]}
             for i in (4, 7)]  # fmt: skip
    written = save_images({"pages": pages}, tmp_path)
    assert written == {(0, "img-0.jpeg"): f"{tmp_path.as_posix()}/img-0.jpeg",
                       (1, "img-0.jpeg"): f"{tmp_path.as_posix()}/page2-img-0.jpeg"}  # fmt: skip
    assert ocr_markdown({"pages": pages}, written).split("\n\n")[1::2] == [
        f"![img-0.jpeg]({tmp_path.as_posix()}/img-0.jpeg)", f"![img-0.jpeg]({tmp_path.as_posix()}/page2-img-0.jpeg)"]


def test_a_header_cannot_close_its_comment():
    page = {"index": 0, "markdown": "text", "header": "a --> b\nc"}
    assert ocr_markdown({"pages": [page]}) == "<!-- Page 1 -->\n\n<!-- Header: a - -> b c -->\n\ntext"


def test_document_annotations(api, samples):
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
              "required": ["title", "year"]}  # fmt: skip
    result = ocr_document(read_media(str(samples["pdf"])), OCRSettings(schema=schema, annotation_prompt="Title?"),
                          SENTINEL_KEY)
    assert document_annotation(result) == {"title": "ACME Corp", "year": 1}
    [body] = ocr_bodies(api)
    assert body["document_annotation_prompt"] == "Title?"
    with pytest.raises(MistralSuiteError, match="no document annotation"):
        document_annotation({"pages": [], "document_annotation": None})
    with pytest.raises(MistralSuiteError, match="not JSON"):
        document_annotation({"pages": [], "document_annotation": "{oops"})


# --- PDFs attached to chat -------------------------------------------------------------------------


def prompt_with(*attachments: llm.Attachment) -> llm.Prompt:
    model = llm.get_model("mistral-small")
    message = Message(role="user", parts=[TextPart(text="Summarise"), *(AttachmentPart(attachment=a) for a in attachments)])
    return llm.Prompt(None, model, messages=[message])


def test_chat_uploads_only_local_pdfs_over_the_inline_limit(api, samples, monkeypatch, tmp_path):
    small = tmp_path / "small.pdf"
    small.write_bytes(pdf_bytes(["tiny"]))
    monkeypatch.setenv("LLM_MISTRAL_INLINE_LIMIT_MB", str(2 * small.stat().st_size / 1024 ** 2))
    big, tiny = llm.Attachment(path=str(samples["pdf"])), llm.Attachment(path=str(small))
    linked = llm.Attachment(url="https://example.com/a.pdf", type="application/pdf")
    image = llm.Attachment(path=str(samples["png"]))
    uploads = upload_large_documents(prompt_with(big, tiny, linked, image), SENTINEL_KEY)
    assert list(uploads.replaced) == [id(big)] and len(uploads.file_ids) == 1
    replacement = uploads.replaced[id(big)]
    assert replacement.type == "application/pdf" and replacement.url.startswith(api.root_url + "/signed/")
    [upload] = api.uploads
    assert (upload.purpose, upload.filename, upload.data) == ("ocr", "report.pdf", samples["pdf"].read_bytes())
    delete_uploads(SENTINEL_KEY, uploads)
    assert api.uploads == []


def test_chat_uploads_are_undone_when_one_fails(api, samples, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_INLINE_LIMIT_MB", "0.001")
    uploaded = documents.upload_file

    def second_upload_fails(*args, **kwargs):
        if api.upload_count:
            raise MistralSuiteError("the upload failed")
        return uploaded(*args, **kwargs)

    monkeypatch.setattr(documents, "upload_file", second_upload_fails)
    second = llm.Attachment(content=REPORT, type="application/pdf")
    with pytest.raises(MistralSuiteError, match="the upload failed"):
        upload_large_documents(prompt_with(llm.Attachment(path=str(samples["pdf"])), second), SENTINEL_KEY)
    assert api.upload_count == 1 and api.uploads == [] and api.delete_count == 1


def test_nothing_is_uploaded_for_a_request_the_service_would_refuse(api, samples, monkeypatch):
    """The limits are checked before the large PDF goes up, not after (nine images: one too many)."""
    monkeypatch.setenv("LLM_MISTRAL_INLINE_LIMIT_MB", "0.001")
    images = [llm.Attachment(path=str(samples["png"])) for _ in range(9)]
    with pytest.raises(MistralSuiteError, match="9 images"):
        upload_large_documents(prompt_with(llm.Attachment(path=str(samples["pdf"])), *images), SENTINEL_KEY)
    assert api.upload_count == 0


def test_a_failed_delete_is_a_warning(api, capsys):
    delete_uploads(SENTINEL_KEY, documents.DocumentUploads({}, ["00000000-0000-4000-8000-000000000000"]))
    err = capsys.readouterr().err
    assert err.startswith("Warning: could not delete the uploaded document 00000000-") and "404" in err


def test_chat_with_a_large_pdf_sends_its_signed_url_then_deletes_it(api, samples, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_INLINE_LIMIT_MB", "0.001")
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    response = llm.get_model("mistral-medium").prompt("Summarise", attachments=[llm.Attachment(path=str(samples["pdf"]))])
    assert response.text() == "echo: Summarise [document report.pdf: 3 pages]"
    [chat] = [rec.body for rec in api.requests if rec.route == "/v1/chat/completions"]
    document = chat["messages"][0]["content"][1]
    assert document["type"] == "document_url" and document["document_url"].startswith(api.root_url + "/signed/")
    assert api.upload_count == 1 and api.uploads == [] and api.delete_count == 1

    async def run() -> str:
        model = llm.get_async_model("mistral-medium")
        return await model.prompt("Again", attachments=[llm.Attachment(path=str(samples["pdf"]))]).text()

    assert asyncio.run(run()) == "echo: Again [document report.pdf: 3 pages]"
    assert api.upload_count == 2 and api.uploads == [] and api.delete_count == 2


def test_chat_deletes_the_upload_when_the_reply_fails(api, samples, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_INLINE_LIMIT_MB", "0.001")
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    monkeypatch.setattr(api, "_chat", lambda req: error_reply(400, "context too long"))
    with pytest.raises(MistralSuiteError, match="context too long"):
        llm.get_model("mistral-medium").prompt("hi", attachments=[llm.Attachment(path=str(samples["pdf"]))]).text()
    assert api.upload_count == 1 and api.uploads == []
