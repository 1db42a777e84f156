"""End-to-end: `llm mistral ocr`, `-f mistral-ocr:` and PDFs attached to chat, through the installed `llm` CLI as a
subprocess against the fake Mistral (scenarios played in parallel; every body the fakes receive is validated)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import (
    SENTINEL_KEY,
    CLISession,
    assert_cli_error,
    assert_cli_ok,
    play_scenarios,
    selected_scenarios,
)
from media_files import write_samples

SCENARIOS: dict[str, Callable[[CLISession], Any]] = {}
REPORT_MARKDOWN = """<!-- Page 1 -->

ACME Corp

Quarterly report

Revenue grew in every region.

Page 1

<!-- Page 2 -->

ACME Corp

| Region | Revenue |
| --- | --- |
| North | 120 |
| South | 95 |

Figures are in thousands.

![img-0.jpeg](img-0.jpeg)

Page 2

<!-- Page 3 -->

ACME Corp

Conclusion

The outlook is stable.

Page 3
"""


def scenario(fn: Callable[[CLISession], Any]) -> Callable[[CLISession], Any]:
    SCENARIOS[fn.__name__] = fn
    return fn


@pytest.fixture(scope="module")
def played(request, tmp_path_factory) -> dict[str, CLISession]:
    return play_scenarios(selected_scenarios(request, SCENARIOS), tmp_path_factory.mktemp("ocr-cli"))


@pytest.fixture
def s(request, played) -> CLISession:
    return played[request.node.name.removeprefix("test_")].check()


def samples(s: CLISession) -> dict[str, Path]:
    return write_samples(s.user_dir.parent / "samples")


def run_with_bytes(s: CLISession, data: bytes, *args: str) -> subprocess.CompletedProcess:
    """``llm ARGS`` with ``data`` as its binary standard input (``CLISession.run`` sends text)."""
    done = subprocess.run([sys.executable, "-m", "llm", *args], input=data, env=s.env, capture_output=True, timeout=60)
    result = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())
    s.results.append(result)
    return result


def ocr_requests(s: CLISession) -> list:
    return [rec for rec in s.fake.requests if rec.route == "/v1/ocr"]


def assert_no_key_stored(user_dir: Path) -> None:
    for path in (p for p in user_dir.rglob("*") if p.is_file()):
        assert SENTINEL_KEY.encode() not in path.read_bytes(), f"the key is in {path}"


@scenario
def ocr_markdown_then_the_cache(s: CLISession) -> None:
    files = samples(s)
    s.run("mistral", "ocr", str(files["pdf"]))
    s.run("mistral", "ocr", str(files["pdf"]))
    s.run("mistral", "ocr", str(files["pdf"]), "--no-cache")


def test_ocr_markdown_then_the_cache(s):
    first, second, third = (assert_cli_ok(result) for result in s.results)
    assert first == second == third == REPORT_MARKDOWN
    assert len(ocr_requests(s)) == 2  # the second run was a cache hit: no request
    document = ocr_requests(s)[0].body["document"]
    assert document["type"] == "document_url" and document["document_url"].startswith("data:application/pdf;base64,")
    assert_no_key_stored(s.user_dir)


@scenario
def ocr_options(s: CLISession) -> None:
    files = samples(s)
    images = s.user_dir.parent / "images"
    s.run("mistral", "ocr", str(files["pdf"]), "--pages", "1", "--table-format", "html", "--header", "--footer",
          "--images", str(images), "-m", "mistral-ocr-2512")
    s.run("mistral", "ocr", str(files["pdf"]), "--json", "--pages", "0-1")
    s.run("mistral", "ocr", str(files["pdf"]), "--schema", "title, year int", "--schema-prompt", "The report's title")


def test_ocr_options(s):
    images = s.user_dir.parent / "images"
    markdown, whole, annotation = (assert_cli_ok(result) for result in s.results)
    assert markdown == (
        "<!-- Page 2 -->\n\n<!-- Header: ACME Corp -->\n\n<table><tr><th>Region</th><th>Revenue</th></tr>"
        "<tr><td>North</td><td>120</td></tr><tr><td>South</td><td>95</td></tr></table>\n\nFigures are in thousands."
        f"\n\n![img-0.jpeg]({images.as_posix()}/img-0.jpeg)\n\n<!-- Footer: Page 2 -->\n"
    )
    assert (images / "img-0.jpeg").read_bytes().startswith(b"\x89PNG")
    result = json.loads(whole)
    assert [p["index"] for p in result["pages"]] == [0, 1] and result["usage_info"]["pages_processed"] == 2
    assert json.loads(annotation) == {"title": "ACME Corp", "year": 1}
    first, second, third = (rec.body for rec in ocr_requests(s))
    assert {k: v for k, v in first.items() if k != "document"} == {
        "model": "mistral-ocr-2512", "pages": [1], "table_format": "html", "extract_header": True,
        "extract_footer": True, "include_image_base64": True}  # fmt: skip
    assert second["pages"] == [0, 1]
    assert third["document_annotation_prompt"] == "The report's title"
    assert third["document_annotation_format"]["json_schema"]["schema"] == {
        "type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["title", "year"], "additionalProperties": False}  # fmt: skip


@scenario
def ocr_standard_input_urls_and_uploads(s: CLISession) -> None:
    files = samples(s)
    run_with_bytes(s, files["png"].read_bytes(), "mistral", "ocr", "-")
    s.run("mistral", "ocr", s.fake.host_file("q3.pdf", files["pdf"].read_bytes(), "application/pdf"), "--pages", "2")
    s.run("mistral", "ocr", str(files["pdf"]), "--pages", "2", LLM_MISTRAL_INLINE_LIMIT_MB="0.001")


def test_ocr_standard_input_urls_and_uploads(s):
    scan, by_url, uploaded = (assert_cli_ok(result) for result in s.results)
    assert scan == "<!-- Page 1 -->\n\nHello from a scan\n"
    assert by_url == uploaded == "<!-- Page 3 -->\n\nACME Corp\n\nConclusion\n\nThe outlook is stable.\n\nPage 3\n"
    documents = [rec.body["document"] for rec in ocr_requests(s)]
    assert documents[0]["type"] == "image_url" and documents[1]["document_url"].endswith("/hosted/q3.pdf")
    assert documents[2]["type"] == "file"
    assert s.fake.upload_count == 1 and s.fake.uploads == [] and s.fake.delete_count == 1


@scenario
def ocr_errors(s: CLISession) -> None:
    files = samples(s)
    notes = s.user_dir.parent / "notes.txt"
    notes.write_text("plain words")
    s.run("mistral", "ocr", "missing.pdf")
    s.run("mistral", "ocr", str(notes))
    s.run("mistral", "ocr", str(files["pdf"]), "--pages", "2-1")
    s.run("mistral", "ocr", str(files["pdf"]), "--pages", "7")
    s.run("mistral", "ocr", "https://example.com/gone.pdf")
    s.run("mistral", "ocr", str(files["pdf"]), "-m", "mistral-large-latest")
    s.run("mistral", "ocr", str(files["pdf"]), "--key", "bad-key")
    s.run("mistral", "ocr", str(files["pdf"]), LLM_MISTRAL_KEY="")
    s.fake.max_upload_bytes = 100
    s.run("mistral", "ocr", str(files["pdf"]), LLM_MISTRAL_INLINE_LIMIT_MB="0.001")
    s.run("mistral", "ocr", str(files["pdf"]), "--schema-prompt", "x")


def test_ocr_errors(s):
    missing, text, backwards, out_of_range, unreachable, model, key, no_key, too_large, prompt_only = s.results
    assert_cli_error(missing, "No such file: missing.pdf")
    assert_cli_error(text, "notes.txt is text (text/plain): Mistral's OCR reads a PDF, an image")
    assert_cli_error(backwards, "Invalid value for '--pages'", "runs backwards")
    assert_cli_error(out_of_range, "report.pdf: Page index 7 is out of range", "--pages counts from 0")
    assert_cli_error(unreachable, "could not read https://example.com/gone.pdf", "Check that the URL is public")
    assert_cli_error(model, "mistral-large-latest is not an OCR model", "mistral-ocr-latest")
    assert_cli_error(key, "rejected the API key (401 Unauthorized)", "llm keys set mistral")
    assert_cli_error(no_key, "No Mistral API key found")
    assert_cli_error(too_large, "report.pdf: File size", "too large for the service")
    assert_cli_error(prompt_only, "--schema-prompt needs --schema")
    assert all(SENTINEL_KEY not in r.stdout + r.stderr and "bad-key" not in r.stderr for r in s.results)
    assert s.fake.uploads == [] and len(ocr_requests(s)) == 4  # out of range, unreachable, model, key


@scenario
def fragment_then_a_second_question_without_ocr(s: CLISession) -> None:
    files = samples(s)
    s.run("-m", "mistral-small", "-f", f"mistral-ocr:{files['pdf']}", "What is the total?")
    s.run("-m", "mistral-small", "-f", f"mistral-ocr:{files['pdf']}", "Who wrote it?")
    s.run("fragments", "list", "--json")
    s.run("-m", "mistral-small", "-f", "mistral-ocr:missing.pdf", "hi")


def test_fragment_then_a_second_question_without_ocr(s):
    first, second, fragments, missing = s.results
    assert assert_cli_ok(first) == "echo: " + REPORT_MARKDOWN.rstrip("\n") + "\nWhat is the total?\n"
    assert assert_cli_ok(second).endswith("Page 3\nWho wrote it?\n")
    assert len(ocr_requests(s)) == 1  # the second question reused the cached OCR
    [stored] = json.loads(assert_cli_ok(fragments))  # stored once, used twice
    pdf = (s.user_dir.parent / "samples" / "report.pdf").resolve()
    assert stored["source"] == f"mistral-ocr:{pdf}" and stored["content"] == REPORT_MARKDOWN.rstrip("\n")
    db = sqlite3.connect(s.user_dir / "logs.db")
    assert db.execute("select count(*) from fragments").fetchone()[0] == 1
    assert_cli_error(missing, "Could not load fragment mistral-ocr:missing.pdf: No such file")
    assert_no_key_stored(s.user_dir)


@scenario
def pdf_attached_to_chat(s: CLISession) -> None:
    files = samples(s)
    s.run("-m", "mistral-medium", "-a", str(files["pdf"]), "Summarise")
    s.run("-m", "mistral-medium", "-a", str(files["pdf"]), "Summarise again", LLM_MISTRAL_INLINE_LIMIT_MB="0.001")
    s.run("-m", "codestral", "-a", str(files["pdf"]), "Summarise")


def test_pdf_attached_to_chat(s):
    inline, uploaded, refused = s.results
    assert assert_cli_ok(inline) == "echo: Summarise [document report.pdf: 3 pages]\n"
    assert assert_cli_ok(uploaded) == "echo: Summarise again [document report.pdf: 3 pages]\n"
    first, second = (body["messages"][0]["content"][1] for body in s.bodies())
    assert first["document_name"] == "report.pdf" and first["document_url"].startswith("data:application/pdf;base64,")
    assert second["document_url"].startswith("http://127.0.0.1:") and "/signed/" in second["document_url"]
    assert s.fake.upload_count == 1 and s.fake.uploads == []
    assert_cli_error(refused, "does not support attachments")  # codestral reads no documents


@scenario
def help_texts(s: CLISession) -> None:
    s.run("mistral", "--help")
    s.run("mistral", "ocr", "--help")
    s.run("fragments", "loaders")


def test_help_texts(s):
    group, ocr, loaders = (assert_cli_ok(result) for result in s.results)
    for name in ("ocr", "transcribe", "speak", "voices"):
        assert f"  {name} " in group
    assert "0-based" in ocr and "<!-- Page 1 --> is index 0" in ocr
    assert "mistral-ocr:" in loaders and "voxtral:" in loaders
