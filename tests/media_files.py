"""Minimal valid test media written by hand (PDF, PNG, WAV) and the small readers the fake server uses (stdlib only)."""

from __future__ import annotations

import base64
import io
import math
import re
import struct
import wave
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

LETTER = (612, 792)  # PDF points (1/72 inch)
_MARGIN = 50  # text above height - _MARGIN is a header, below _MARGIN a footer


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for ``data``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# --- PNG -----------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(
    width: int = 4,
    height: int = 4,
    rgb: tuple[int, int, int] = (200, 30, 30),
    *,
    text: str | None = None,
    pixels: bytes | None = None,
) -> bytes:
    """An 8-bit RGB PNG, one colour (or ``pixels``: width*height*3 raw RGB bytes). ``text`` goes into a
    ``tEXt`` chunk (keyword ``Description``): the fake server's OCR reads it as the text of the image."""
    pixels = pixels if pixels is not None else bytes(rgb) * (width * height)
    rows = b"".join(b"\x00" + pixels[y * width * 3 : (y + 1) * width * 3] for y in range(height))
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    if text is not None:
        chunks.append(_png_chunk(b"tEXt", b"Description\x00" + text.encode("latin-1", "replace")))
    chunks += [_png_chunk(b"IDAT", zlib.compress(rows)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


@dataclass
class ImageInfo:
    mime: str
    width: int
    height: int
    text: str  # a PNG tEXt/iTXt "Description" or a JPEG comment; "" when none


def image_info(data: bytes) -> ImageInfo | None:
    """Type, size and embedded text of a PNG or JPEG; None for anything else (or a broken header)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        text, pos = "", 8
        while pos + 8 <= len(data):
            size, kind = struct.unpack(">I", data[pos : pos + 4])[0], data[pos + 4 : pos + 8]
            payload = data[pos + 8 : pos + 8 + size]
            if kind in (b"tEXt", b"iTXt") and payload.startswith(b"Description\x00"):
                raw = payload[len(b"Description\x00") :]
                text = raw.split(b"\x00")[-1].decode("utf-8" if kind == b"iTXt" else "latin-1", "replace")
            pos += 12 + size
        return ImageInfo("image/png", width, height, text)
    if data.startswith(b"\xff\xd8"):
        pos, text, size = 2, "", None
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            marker, (length,) = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])
            if marker == 0xFE:
                text = data[pos + 4 : pos + 2 + length].decode("latin-1")
            elif marker in (0xC0, 0xC1, 0xC2) and size is None:
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                size = (width, height)
            if marker == 0xDA:  # start of scan: no more headers
                break
            pos += 2 + length
        return ImageInfo("image/jpeg", *size, text) if size else None
    return None


# --- WAV and other audio -------------------------------------------------------------------------


def wav_bytes(seconds: float = 1.0, rate: int = 8000, tone: float = 440.0) -> bytes:
    """A mono 16-bit WAV of ``seconds`` of a sine ``tone`` (Hz; 0 gives silence)."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * tone * i / rate))) for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


@dataclass
class AudioInfo:
    format: str  # wav, mp3, flac, ogg, m4a
    seconds: float  # exact for WAV; estimated at 16 kB/s for compressed formats


_AUDIO_MAGIC = ((b"ID3", "mp3"), (b"\xff\xfb", "mp3"), (b"\xff\xf3", "mp3"), (b"fLaC", "flac"), (b"OggS", "ogg"))


def audio_info(data: bytes) -> AudioInfo | None:
    """Format and duration of audio, recognised by its header; None when ``data`` is not audio."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            with wave.open(io.BytesIO(data)) as w:
                return AudioInfo("wav", w.getnframes() / w.getframerate())
        except (wave.Error, EOFError, ZeroDivisionError):
            return None
    fmt = next((name for magic, name in _AUDIO_MAGIC if data.startswith(magic)), None)
    if fmt is None and data[4:8] == b"ftyp":
        fmt = "m4a"
    return AudioInfo(fmt, len(data) / 16000) if fmt else None


# --- PDF writing ---------------------------------------------------------------------------------


def _pdf_string(text: str) -> bytes:
    raw = text.encode("latin-1", "replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def pdf_bytes(
    pages: Sequence[Union[str, Sequence[str]]],
    *,
    header: str | None = None,
    footer: str | None = None,
    images_on: Iterable[int] = (),
    size: tuple[int, int] = LETTER,
) -> bytes:
    """A valid PDF with one page per item of ``pages`` (a string, split at newlines, or a list of lines),
    each line drawn with a ``(..) Tj`` operator from the top down. ``header``/``footer`` are drawn in the top
    and bottom margins of every page (``{n}`` becomes the 1-based page number). Pages whose 0-based index is in
    ``images_on`` also show a small RGB image (an image XObject) below their text. Lines with `` | `` between
    cells read as table rows to the fake's OCR."""
    width, height = size
    images_on = set(images_on)
    objects: list[bytes] = [b"", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    image = zlib.compress(bytes((40 * i) % 256 for i in range(4 * 2 * 3)))  # 4x2 RGB pixels
    objects.append(
        b"<< /Type /XObject /Subtype /Image /Width 4 /Height 2 /ColorSpace /DeviceRGB /BitsPerComponent 8 "
        b"/Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (len(image), image)
    )
    kids = []
    for number, page in enumerate(pages):
        lines = page.split("\n") if isinstance(page, str) else list(page)
        ops = []
        if header is not None:
            ops.append(b"BT /F1 10 Tf 72 %d Td %s Tj ET" % (height - 30, _pdf_string(header.format(n=number + 1))))
        y = height - 100
        for line in lines:
            ops.append(b"BT /F1 12 Tf 72 %d Td %s Tj ET" % (y, _pdf_string(line)))
            y -= 20
        if number in images_on:
            ops.append(b"q 144 0 0 72 72 %d cm /Im0 Do Q" % (y - 80))
        if footer is not None:
            ops.append(b"BT /F1 10 Tf 72 30 Td %s Tj ET" % _pdf_string(footer.format(n=number + 1)))
        stream = b"\n".join(ops)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> /XObject << /Im0 4 0 R >> >> >>" % (width, height, len(objects))
        )
        kids.append(b"%d 0 R" % len(objects))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out, offsets = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --- PDF reading ---------------------------------------------------------------------------------


@dataclass
class PdfText:
    y: float  # baseline, PDF points from the bottom
    text: str


@dataclass
class PdfImage:
    x: float  # lower-left corner and size, PDF points
    y: float
    width: float
    height: float
    data: bytes  # the picture as a PNG or JPEG ("" when its encoding is not one the reader knows)
    mime: str


@dataclass
class PdfPage:
    width: float
    height: float
    content: list[Union[PdfText, PdfImage]] = field(default_factory=list)  # top to bottom

    @property
    def lines(self) -> list[str]:
        return [c.text for c in self.content if isinstance(c, PdfText)]

    def margin(self, line: PdfText) -> str | None:
        """The margin ``line`` is in: "header" (top), "footer" (bottom) or None."""
        return "header" if line.y > self.height - _MARGIN else "footer" if line.y < _MARGIN else None

    def header(self) -> str | None:
        """The text in the top margin, if any."""
        return " ".join(c.text for c in self.content if isinstance(c, PdfText) and self.margin(c) == "header") or None

    def footer(self) -> str | None:
        """The text in the bottom margin, if any."""
        return " ".join(c.text for c in self.content if isinstance(c, PdfText) and self.margin(c) == "footer") or None


_OBJ_RE = re.compile(rb"(\d+)\s+\d+\s+obj\b(.*?)\bendobj", re.DOTALL)
_REF_RE = re.compile(rb"(\d+)\s+\d+\s+R")
_MEDIABOX_RE = re.compile(rb"/MediaBox\s*\[\s*([-\d.\s]+)\]")
_TOKEN_RE = re.compile(
    rb"\((?:\\.|[^\\)])*\)|<[0-9A-Fa-f\s]*>|\[|\]|/[^\s/\[\]()<>]+|[-+]?(?:\d+\.?\d*|\.\d+)|[A-Za-z'\"*]+",
    re.DOTALL,
)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _literal(token: bytes) -> str:
    body = re.sub(
        rb"\\(\d{1,3}|\r?\n|.)",
        lambda m: bytes([int(m[1], 8) & 0xFF]) if m[1][:1].isdigit() else _ESCAPES.get(m[1], m[1].strip(b"\r\n")),
        token[1:-1],
        flags=re.DOTALL,
    )
    return body.decode("latin-1")


def _hex(token: bytes) -> str:
    digits = re.sub(rb"\s", b"", token[1:-1]).decode()
    raw = bytes.fromhex(digits + "0" * (len(digits) % 2))
    return raw[2:].decode("utf-16-be", "replace") if raw.startswith(b"\xfe\xff") else raw.decode("latin-1")


class _Pdf:
    def __init__(self, data: bytes) -> None:
        self.objects = {int(m[1]): m[2] for m in _OBJ_RE.finditer(data)}

    def ref(self, body: bytes, key: bytes) -> bytes | None:
        """The object a ``/Key n 0 R`` entry of ``body`` points at, or the inline value's text."""
        m = re.search(rb"/" + key + rb"\s*(\d+)\s+\d+\s+R", body)
        return self.objects.get(int(m[1])) if m else None

    def stream(self, body: bytes) -> bytes:
        start = re.search(rb"stream\r?\n", body)
        if not start:
            return b""
        length = re.search(rb"/Length\s+(\d+)(\s+\d+\s+R)?", body[: start.start()])
        if length and length[2]:
            length = re.match(rb"\s*(\d+)", self.objects.get(int(length[1]), b""))
        data = body[start.end() : start.end() + int(length[1])] if length else body[start.end() :]
        data = data.split(b"endstream")[0]
        if b"/FlateDecode" not in body[: start.start()]:
            return data
        try:
            return zlib.decompress(data)
        except zlib.error:
            return b""

    def pages(self, node: bytes, inherited: bytes = b"") -> list[tuple[bytes, bytes]]:
        """(page dictionary, inherited attributes) pairs in document order."""
        if re.search(rb"/Type\s*/Page\b", node):
            return [(node, inherited)]
        kids = re.search(rb"/Kids\s*\[(.*?)\]", node, re.DOTALL)
        refs = _REF_RE.findall(kids[1]) if kids else []
        return [p for r in refs if int(r) in self.objects for p in self.pages(self.objects[int(r)], node + inherited)]


def _image(pdf: _Pdf, body: bytes) -> tuple[bytes, str]:
    head = body.split(b"stream")[0]
    if b"/DCTDecode" in head:
        return pdf.stream(body.replace(b"/DCTDecode", b"/DCT")), "image/jpeg"
    width, height = (re.search(rb"/" + k + rb"\s+(\d+)", head) for k in (b"Width", b"Height"))
    if b"/DeviceRGB" in head and width and height and re.search(rb"/BitsPerComponent\s+8", head):
        try:
            return png_bytes(int(width[1]), int(height[1]), pixels=pdf.stream(body)), "image/png"
        except zlib.error:
            pass
    return b"", ""


def _page_content(pdf: _Pdf, page: bytes, inherited: bytes) -> PdfPage:
    box = _MEDIABOX_RE.search(page) or _MEDIABOX_RE.search(inherited)
    x0, y0, x1, y1 = (float(v) for v in box[1].split()[:4]) if box else (0, 0, *LETTER)
    result = PdfPage(x1 - x0, y1 - y0)
    contents = re.search(rb"/Contents\s*(\[.*?\]|\d+\s+\d+\s+R)", page, re.DOTALL)
    refs = _REF_RE.findall(contents[1]) if contents else []
    stream = b"\n".join(pdf.stream(pdf.objects.get(int(r), b"")) for r in refs)
    resources = pdf.ref(page, b"Resources") or pdf.ref(inherited, b"Resources") or page + inherited
    xobjects = pdf.ref(resources, b"XObject") or resources
    lines: dict[float, str] = {}
    operands: list = []
    y, leading, ctm, saved = 0.0, 0.0, (1.0, 1.0, 0.0, 0.0), []
    for token in _TOKEN_RE.findall(stream):
        if token[:1] in b"(<[/]" or token[:1] in b"-+.0123456789":
            operands.append(token)
            continue
        op, args = token.decode(), operands
        operands = []
        numbers = [float(a) for a in args if a[:1] in b"-+.0123456789"]
        if op == "BT":
            y = 0.0
        elif op in ("Td", "TD") and len(numbers) >= 2:
            y += numbers[-1]
            leading = -numbers[-1] if op == "TD" else leading
        elif op == "Tm" and len(numbers) >= 6:
            y = numbers[5]
        elif op == "TL" and numbers:
            leading = numbers[-1]
        elif op in ("T*", "'", '"'):
            y -= leading
        elif op == "q":
            saved.append(ctm)
        elif op == "Q" and saved:
            ctm = saved.pop()
        elif op == "cm" and len(numbers) >= 6:
            a, _, _, d, e, f = numbers[-6:]
            ctm = (a * ctm[0], d * ctm[1], e * ctm[0] + ctm[2], f * ctm[1] + ctm[3])
        elif op == "Do" and args:
            target = pdf.ref(xobjects, args[-1][1:])
            if target and b"/Image" in target.split(b"stream")[0]:
                data, mime = _image(pdf, target)
                result.content.append(PdfImage(ctm[2], ctm[3], ctm[0], ctm[1], data, mime))
        if op in ("Tj", "TJ", "'", '"'):
            parts = []
            for a in args:
                if a[:1] == b"(":
                    parts.append(_literal(a))
                elif a[:1] == b"<":
                    parts.append(_hex(a))
                elif op == "TJ" and a[:1] in b"-+.0123456789" and float(a) < -200:
                    parts.append(" ")
            key = round(y, 1)
            lines[key] = lines.get(key, "") + "".join(parts)
    result.content += [PdfText(key, text) for key, text in lines.items() if text.strip()]
    result.content.sort(key=lambda c: -(c.y + (c.height if isinstance(c, PdfImage) else 0)))
    return result


def read_pdf(data: bytes) -> list[PdfPage]:
    """The pages of a PDF with their text lines and images, top to bottom. Reads plain-object PDFs (what
    ``pdf_bytes`` writes, and most simple generators); PDFs whose page tree is hidden in compressed object
    streams still count their pages, without content. Raises ValueError when ``data`` is not a PDF."""
    if data.lstrip()[:5] != b"%PDF-":
        raise ValueError("not a PDF")
    pdf = _Pdf(data)
    root = re.search(rb"/Root\s+(\d+)\s+\d+\s+R", data)
    catalog = pdf.objects.get(int(root[1]), b"") if root else b""
    tree = pdf.ref(catalog, b"Pages")
    pages = pdf.pages(tree) if tree else []
    if pages:
        return [_page_content(pdf, page, inherited) for page, inherited in pages]
    count = len(re.findall(rb"/Type\s*/Page\b", data))
    if not count:
        raise ValueError("no pages")
    return [PdfPage(*LETTER) for _ in range(count)]


# --- samples -------------------------------------------------------------------------------------

SAMPLE_PAGES = (
    ["Quarterly report", "Revenue grew in every region."],
    ["Region | Revenue", "North | 120", "South | 95", "Figures are in thousands."],
    ["Conclusion", "The outlook is stable."],
)


def write_samples(directory: Path) -> dict[str, Path]:
    """Write ``report.pdf`` (three pages of SAMPLE_PAGES with a header and page-number footers, a table and an
    image on page 2), ``scan.png`` (text "Hello from a scan") and ``speech.wav`` (2.5 s) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "pdf": (
            directory / "report.pdf",
            pdf_bytes(SAMPLE_PAGES, header="ACME Corp", footer="Page {n}", images_on=[1]),
        ),
        "png": (directory / "scan.png", png_bytes(text="Hello from a scan")),
        "wav": (directory / "speech.wav", wav_bytes(2.5)),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {kind: path for kind, (path, _) in files.items()}
