"""Tests for the hand-written test media (PDF, PNG, WAV) and their readers."""

from __future__ import annotations

import struct
import sys
import wave
import zlib
from io import BytesIO
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from media_files import (  # noqa: E402
    SAMPLE_PAGES,
    PdfImage,
    PdfText,
    audio_info,
    data_uri,
    image_info,
    pdf_bytes,
    png_bytes,
    read_pdf,
    wav_bytes,
    write_samples,
)


def test_pdf_round_trip_text_margins_and_images():
    data = pdf_bytes(SAMPLE_PAGES, header="ACME Corp", footer="Page {n}", images_on=[1])
    assert data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
    pages = read_pdf(data)
    assert len(pages) == 3
    assert [p.lines[1:-1] for p in pages] == [list(lines) for lines in SAMPLE_PAGES]
    assert [(p.header(), p.footer()) for p in pages] == [("ACME Corp", f"Page {n}") for n in (1, 2, 3)]
    assert (pages[0].width, pages[0].height) == (612, 792)
    [image] = [c for c in pages[1].content if isinstance(c, PdfImage)]
    assert (image.x, image.width, image.height, image.mime) == (72, 144, 72, "image/png")
    assert image_info(image.data).width == 4  # the 4x2 RGB XObject, re-encoded as PNG
    assert isinstance(pages[1].content[-2], PdfImage)  # below the text, above the footer
    assert not any(isinstance(c, PdfImage) for c in pages[0].content)


def test_pdf_escapes_latin1_and_line_lists():
    pages = read_pdf(pdf_bytes(["a (b) \\ c\nsecond", ["café", "x)"]], size=(300, 400)))
    assert pages[0].lines == ["a (b) \\ c", "second"] and pages[1].lines == ["café", "x)"]
    assert (pages[1].width, pages[1].height) == (300, 400)
    assert pages[0].header() is None and pages[0].footer() is None


def test_pdf_reader_handles_compressed_streams_tj_arrays_hex_and_tm():
    content = zlib.compress(
        b"BT /F1 12 Tf 1 0 0 1 72 700 Tm [(Hel) -20 (lo) -300 (world)] TJ ET\n"
        b"BT 72 650 Td <48690a> Tj 0 -20 TD (next\\051 line) Tj T* (third) ' ET"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 /MediaBox [0 0 500 800] >>",
        b"<< /Type /Page /Parent 2 0 R /Contents [4 0 R] >>",
        b"<< /Length 5 0 R /Filter /FlateDecode >>\nstream\n" + content + b"\nendstream",
        str(len(content)).encode(),
    ]
    data = b"%PDF-1.7\n" + b"".join(b"%d 0 obj\n%s\nendobj\n" % (i, o) for i, o in enumerate(objects, 1))
    data += b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    [page] = read_pdf(data)
    assert (page.width, page.height) == (500, 800)  # MediaBox inherited from the page tree
    assert page.lines == ["Hello world", "Hi\n", "next) line", "third"]


def test_read_pdf_rejects_non_pdfs_and_counts_pages_it_cannot_walk():
    for junk in (b"", b"hello", png_bytes(), b"%PDF-1.4\nno pages here"):
        with pytest.raises(ValueError):
            read_pdf(junk)
    opaque = b"%PDF-1.5\n" + b"<< /Type /Page >>\n" * 2 + b"<< /Type /ObjStm >>stream\nxx\nendstream\n"
    assert [p.lines for p in read_pdf(opaque)] == [[], []]


def test_png_and_jpeg_info():
    png = png_bytes(3, 2, text="Hello from a scan")
    info = image_info(png)
    assert (info.mime, info.width, info.height, info.text) == ("image/png", 3, 2, "Hello from a scan")
    assert image_info(png_bytes()).text == ""
    assert zlib.crc32(png[12:29]) == struct.unpack(">I", png[29:33])[0]  # IHDR checksum
    comment = b"\xff\xfe\x00\x06scan"  # a COM segment: length 6 counts its own two bytes
    frame = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 48, 64) + b"\x03" + bytes(9)  # SOF0: 64 x 48
    jpeg = b"\xff\xd8" + comment + frame
    info = image_info(jpeg + b"\xff\xda\x00\x02")
    assert (info.mime, info.width, info.height, info.text) == ("image/jpeg", 64, 48, "scan")
    assert image_info(b"\xff\xd8\xff\xda\x00\x02") is None and image_info(b"GIF89a") is None


def test_wav_and_audio_info():
    data = wav_bytes(2.5, rate=8000)
    with wave.open(BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 20000)
    assert (audio_info(data).format, audio_info(data).seconds) == ("wav", 2.5)
    assert audio_info(b"ID3" + b"\x00" * 31997).format == "mp3" and audio_info(b"ID3" + b"\x00" * 31997).seconds == 2
    assert audio_info(b"\x00\x00\x00\x18ftypM4A ").format == "m4a"
    assert audio_info(b"fLaC....").format == "flac" and audio_info(b"OggS....").format == "ogg"
    assert audio_info(b"RIFF\x00\x00\x00\x00WAVEbroken") is None
    assert audio_info(pdf_bytes(["x"])) is None and audio_info(b"") is None


def test_write_samples_and_data_uri(tmp_path):
    paths = write_samples(tmp_path / "media")
    assert sorted(p.name for p in paths.values()) == ["report.pdf", "scan.png", "speech.wav"]
    assert len(read_pdf(paths["pdf"].read_bytes())) == 3
    assert image_info(paths["png"].read_bytes()).text == "Hello from a scan"
    assert audio_info(paths["wav"].read_bytes()).seconds == 2.5
    assert data_uri(b"\x00\xff", "application/pdf") == "data:application/pdf;base64,AP8="
    assert all(isinstance(c, (PdfText, PdfImage)) for c in read_pdf(paths["pdf"].read_bytes())[1].content)
