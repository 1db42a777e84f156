"""Rows of a batch input: plain text, JSONL, JSON, CSV or TSV read as a stream, each with the line it came from."""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple, Union

from .errors import MistralSuiteError

# llm embed-multi's --format names (json, csv, tsv, nl), plus text: one item a line
FORMATS = ("text", "nl", "json", "csv", "tsv")
EXTENSIONS = {".txt": "text", ".jsonl": "nl", ".ndjson": "nl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
_CHUNK = 1 << 20


class InputRow(NamedTuple):
    """One item of the input: where it starts (``line 12``, ``item 3``), its number there, and its
    value: a dict of columns, or the text of a plain-text line."""

    where: str
    number: int
    value: Union[dict[str, Any], str]


def input_error(where: str, message: str) -> MistralSuiteError:
    return MistralSuiteError(f"{where[:1].upper()}{where[1:]}: {message}")


def open_input(path: str) -> IO[bytes]:
    """The input file, or standard input for ``-``, as a buffered binary stream."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        raise MistralSuiteError(f"Cannot read {path}: {error.strerror or error}.") from None


def detect_format(path: str, stream: IO[bytes], plain_text: bool) -> str:
    """The input's format: from the file's extension, else from its first bytes: ``{`` is JSONL, ``[`` JSON;
    otherwise plain text for prompts (``plain_text``), or CSV / TSV as llm embed-multi sniffs them."""
    by_name = EXTENSIONS.get(Path(path).suffix.lower()) if path != "-" else None
    if by_name:
        return by_name
    head = stream.peek(4096)[:4096] if hasattr(stream, "peek") else b""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"{"):
        return "nl"
    if stripped.startswith(b"["):
        return "json"
    if plain_text:
        return "text"
    first_line = stripped.split(b"\n", 1)[0]
    return "tsv" if first_line.count(b"\t") > first_line.count(b",") else "csv"


def read_rows(stream: IO[bytes], fmt: str) -> Iterator[InputRow]:
    """Every non-blank item of ``stream`` in format ``fmt`` (see ``FORMATS``), never the whole input in memory."""
    if fmt == "text":
        yield from _text_rows(stream)
    elif fmt == "nl":
        yield from _jsonl_rows(stream)
    elif fmt == "json":
        yield from _json_array_rows(stream)
    elif fmt in ("csv", "tsv"):
        yield from _csv_rows(stream, "\t" if fmt == "tsv" else ",")
    else:
        raise MistralSuiteError(f"Unknown input format {fmt!r}; use one of {', '.join(FORMATS)}.")


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(stream, 1):
        try:
            yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise input_error(f"line {number}", "this is not UTF-8 text.") from None


def _text_rows(stream: IO[bytes]) -> Iterator[InputRow]:
    for number, line in _lines(stream):
        text = line.rstrip("\r\n")
        if text.strip():
            yield InputRow(f"line {number}", number, text)


def _jsonl_rows(stream: IO[bytes]) -> Iterator[InputRow]:
    for number, line in _lines(stream):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            raise input_error(f"line {number}", f"this is not valid JSON ({error}).") from None
        yield _checked(InputRow(f"line {number}", number, value))


def _checked(row: InputRow) -> InputRow:
    if not isinstance(row.value, (dict, str)):
        raise input_error(row.where, f"expected a JSON object (or a string), not {type(row.value).__name__}.")
    return row


def _json_array_rows(stream: IO[bytes]) -> Iterator[InputRow]:
    """The items of one JSON array (or a single object), decoded as they arrive."""
    decoder = json.JSONDecoder()
    reader = codecs.getincrementaldecoder("utf-8-sig")()
    buffer, position, ended = "", 0, False

    def more() -> bool:
        nonlocal buffer, position, ended
        if ended:
            return False
        chunk = stream.read(_CHUNK)
        ended = not chunk
        try:
            buffer = buffer[position:] + reader.decode(chunk, final=ended)
        except UnicodeDecodeError:
            raise MistralSuiteError("The JSON input is not UTF-8 text.") from None
        position = 0
        return True

    def skip_space() -> str:
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n":
                position += 1
            if position < len(buffer) or not more():
                return buffer[position : position + 1]

    first = skip_space()
    if first == "{":  # a single object, as llm embed-multi takes it
        value = _decode(decoder, more, lambda: (buffer, position), "item 1")[0]
        yield _checked(InputRow("item 1", 1, value))
        return
    if first != "[":
        raise MistralSuiteError("The JSON input is not an array of objects.")
    position += 1
    number = 0
    while True:
        if skip_space() == "]":
            return
        number += 1
        value, position = _decode(decoder, more, lambda: (buffer, position), f"item {number}")
        yield _checked(InputRow(f"item {number}", number, value))
        separator = skip_space()
        if separator == ",":
            position += 1
        elif separator != "]":
            raise input_error(f"item {number}", "expected ',' or ']' after it in the JSON array.")


def _decode(decoder: json.JSONDecoder, more: Any, state: Any, where: str) -> tuple[Any, int]:
    """One JSON value at the current position, reading more input while it is incomplete."""
    while True:
        buffer, position = state()
        try:
            return decoder.raw_decode(buffer, position)
        except ValueError as error:
            if not more():
                raise input_error(where, f"this is not valid JSON ({error}).") from None


def _csv_rows(stream: IO[bytes], delimiter: str) -> Iterator[InputRow]:
    """CSV or TSV rows, strictly: a quote left open (which would swallow the rest of the input into one prompt) or
    text after a closing quote is an error naming the row's first line."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        reader = csv.DictReader(text, delimiter=delimiter, strict=True)
        start = 1  # the header's first line
        try:
            if reader.fieldnames:  # the header, read first: a quote left open there swallows the whole input too
                start = reader.line_num + 1
            for record in reader:
                where = f"line {start}"
                if None in record:
                    raise input_error(where, "this row has more fields than the header.")
                yield InputRow(where, start, record)
                start = reader.line_num + 1
        except UnicodeDecodeError:
            raise input_error(f"line {reader.line_num + 1}", "this is not UTF-8 text.") from None
        except csv.Error as error:
            if "end of data" in str(error):  # csv's words for a quote still open at the end of the input
                raise input_error(f"line {start}", "a quote opened in this row is never closed.") from None
            kind = "TSV" if delimiter == "\t" else "CSV"
            raise input_error(f"line {start}", f"this is not valid {kind} ({error}).") from None
    finally:
        text.detach()  # the caller closes the stream (which may be standard input)


def files_rows(files: tuple[tuple[str, str], ...], encodings: tuple[str, ...]) -> Iterator[InputRow]:
    """``--files DIR GLOB`` as llm embed-multi reads it: one item per file, its path under DIR as the id."""
    number = 0
    for directory, pattern in files:
        root = Path(directory)
        if not root.is_dir():
            raise MistralSuiteError(f"Invalid directory: {directory}")
        for path in sorted(root.glob(pattern)):
            if path.is_dir():
                continue
            data = path.read_bytes()
            for encoding in encodings or ("utf-8", "latin-1"):
                try:
                    content = data.decode(encoding)
                    break
                except UnicodeDecodeError:
                    continue
            else:
                raise MistralSuiteError(f"Could not decode text in file {path}")
            number += 1
            yield InputRow(f"file {path}", number, {"id": str(path.relative_to(root)), "content": content})
