"""Batch inputs (batch_input.py): every format read as a stream, with the line each row came from, and bad input
reported by line."""

from __future__ import annotations

import io
import json

import pytest

from _llm_mistral_suite.batch_input import detect_format, files_rows, read_rows
from _llm_mistral_suite.errors import MistralSuiteError


def rows(data: bytes, fmt: str) -> list[tuple[str, int, object]]:
    return [tuple(row) for row in read_rows(io.BufferedReader(io.BytesIO(data)), fmt)]


def error(data: bytes, fmt: str) -> str:
    with pytest.raises(MistralSuiteError) as caught:
        rows(data, fmt)
    return caught.value.message


def test_plain_text_one_prompt_a_line_blank_lines_skipped_numbers_kept():
    assert rows(b"first\r\n\n  \nsecond, with a comma\n", "text") == [
        ("line 1", 1, "first"), ("line 4", 4, "second, with a comma"),
    ]
    assert rows("\ufeffbom\n".encode(), "text") == [("line 1", 1, "bom")]


def test_jsonl_rows_and_their_errors():
    data = b'{"id": "a", "prompt": "hi"}\n\n"just text"\n'
    assert rows(data, "nl") == [("line 1", 1, {"id": "a", "prompt": "hi"}), ("line 3", 3, "just text")]
    assert error(b'{"id": 1}\n{"id": 2\n', "nl").startswith("Line 2: this is not valid JSON")
    assert error(b'{"id": 1}\n[1, 2]\n', "nl") == "Line 2: expected a JSON object (or a string), not list."
    assert error(b'{"a": "\xff"}\n', "nl") == "Line 1: this is not UTF-8 text."


def test_csv_and_tsv_rows_carry_the_line_they_start_on():
    data = b'id,prompt\r\n1,"two\nlines"\r\n2,plain\r\n'
    assert rows(data, "csv") == [
        ("line 2", 2, {"id": "1", "prompt": "two\nlines"}), ("line 4", 4, {"id": "2", "prompt": "plain"}),
    ]
    assert rows(b"id\tprompt\nx\ty, z\n", "tsv") == [("line 2", 2, {"id": "x", "prompt": "y, z"})]
    assert error(b"id,prompt\n1,a\n2,b,extra\n", "csv") == "Line 3: this row has more fields than the header."


@pytest.mark.parametrize("data, fmt, message", [
    (b'id,prompt\n1,ok\n2,"unterminated\n', "csv", "Line 3: a quote opened in this row is never closed."),
    (b'id\tprompt\n1\tok\n2\t"unterminated\n', "tsv", "Line 3: a quote opened in this row is never closed."),
    (b'id,prompt\n1,"two\nlines"\n2,"open\nto the end\n', "csv", "Line 4: a quote opened in this row is never closed."),
    (b'"id,prompt\n1,a\n', "csv", "Line 1: a quote opened in this row is never closed."),  # the header's
    (b'id,prompt\n1,"quoted"tail\n', "csv", "Line 2: this is not valid CSV (',' expected after '\"')."),
])
def test_a_quote_left_open_or_misplaced_is_an_error_naming_its_line(data, fmt, message):
    assert error(data, fmt) == message
    assert rows(b'id,prompt\n1,say "hi"\n', "csv") == [("line 2", 2, {"id": "1", "prompt": 'say "hi"'})]  # a quote inside a field


def test_json_arrays_are_decoded_item_by_item_across_read_chunks(monkeypatch):
    import _llm_mistral_suite.batch_input as batch_input

    monkeypatch.setattr(batch_input, "_CHUNK", 7)  # items straddle many reads
    items = [{"id": str(n), "prompt": "é" * n} for n in range(30)]
    data = json.dumps(items, ensure_ascii=False, indent=1).encode()
    assert [row[2] for row in rows(data, "json")] == items
    assert [row[0] for row in rows(data, "json")][:2] == ["item 1", "item 2"]
    assert rows(b'  {"id": "only"}', "json") == [("item 1", 1, {"id": "only"})]
    assert rows(b"[]", "json") == []
    assert error(b'[{"id": 1} {"id": 2}]', "json") == "Item 1: expected ',' or ']' after it in the JSON array."
    assert error(b'[{"id": 1}, {"id": ', "json").startswith("Item 2: this is not valid JSON")
    assert error(b'"text"', "json") == "The JSON input is not an array of objects."


@pytest.mark.parametrize("name, head, plain, expected", [
    ("prompts.txt", b'{"a": 1}', True, "text"),  # the extension wins
    ("rows.jsonl", b"x", True, "nl"),
    ("rows.ndjson", b"x", True, "nl"),
    ("rows.JSON", b"x", True, "json"),
    ("rows.csv", b"x", True, "csv"),
    ("rows.tsv", b"x", True, "tsv"),
    ("-", b'\n {"id": 1}', True, "nl"),
    ("-", b"[{}]", False, "json"),
    ("-", b"hello, world", True, "text"),
    ("-", b"id,content\n1,a", False, "csv"),
    ("data", b"id\tcontent\n1\ta, b", False, "tsv"),
])
def test_format_from_the_extension_or_the_first_bytes(name, head, plain, expected):
    assert detect_format(name, io.BufferedReader(io.BytesIO(head)), plain) == expected


def test_files_are_rows_with_their_path_as_id(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("alpha")
    (tmp_path / "docs" / "sub" / "b.md").write_bytes("bêta".encode("latin-1"))
    found = list(files_rows(((str(tmp_path / "docs"), "**/*.md"),), ()))
    assert [row.value for row in found] == [{"id": "a.md", "content": "alpha"}, {"id": "sub/b.md", "content": "bêta"}]
    with pytest.raises(MistralSuiteError, match="Invalid directory"):
        list(files_rows(((str(tmp_path / "nope"), "*"),), ()))
