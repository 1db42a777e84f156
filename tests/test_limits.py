"""Attachment limits (issue 10, item 10): what Mistral's API takes in one request is checked before a byte is read
or sent (10 MB an image, 8 images a request, 50 MB a document, about 20 minutes of audio)."""

from __future__ import annotations

import llm
import pytest
from api_mock import PNG

from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok
from inprocess import invoke_llm

from _llm_mistral_suite import limits
from _llm_mistral_suite.errors import MistralSuiteError


def sparse_file(path, size: int, head: bytes = b"") -> str:
    """A ``size``-byte file that starts with ``head`` and takes no disk space or memory to make."""
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return str(path)


def wav_header(seconds: float, rate: int = 16000) -> bytes:
    data = int(seconds * rate * 2)
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little") + \
        (rate * 2).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return (b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVE" + b"fmt " + (16).to_bytes(4, "little") + fmt
            + b"data" + data.to_bytes(4, "little"))


def test_an_image_over_the_size_limit_is_refused_before_reading_it(tmp_path):
    big = sparse_file(tmp_path / "photo.png", 11 * limits.MB, PNG)
    with pytest.raises(MistralSuiteError, match="photo.png is 11.0 MB; Mistral's API takes images of up to 10 MB"):
        limits.check_attachments([llm.Attachment(path=big)], limits.MISTRAL_ATTACHMENT_LIMITS)
    ok = sparse_file(tmp_path / "ok.png", 10 * limits.MB, PNG)
    limits.check_attachments([llm.Attachment(path=ok)], limits.MISTRAL_ATTACHMENT_LIMITS)


def test_more_images_than_a_request_takes_are_refused():
    with pytest.raises(MistralSuiteError, match="holds 9 images .* at most 8 per request"):
        limits.check_attachments([llm.Attachment(content=PNG)] * 9, limits.MISTRAL_ATTACHMENT_LIMITS)
    limits.check_attachments([llm.Attachment(content=PNG)] * 8, limits.MISTRAL_ATTACHMENT_LIMITS)


def test_a_document_over_the_size_limit_is_refused(tmp_path):
    pdf = sparse_file(tmp_path / "scan.pdf", 51 * limits.MB, b"%PDF-1.7\n")
    with pytest.raises(MistralSuiteError, match="scan.pdf is 51.0 MB; Mistral's API takes documents of up to 50 MB"):
        limits.check_attachments([llm.Attachment(path=pdf, type="application/pdf")], limits.MISTRAL_ATTACHMENT_LIMITS)


def test_more_audio_than_a_request_takes_is_refused(tmp_path):
    long = sparse_file(tmp_path / "meeting.wav", len(wav_header(21 * 60)) + 21 * 60 * 32000, wav_header(21 * 60))
    with pytest.raises(MistralSuiteError, match="21 minutes of audio; Mistral's API takes about 20 minutes"):
        limits.check_attachments([llm.Attachment(path=long, type="audio/wav")], limits.MISTRAL_ATTACHMENT_LIMITS)
    short = wav_header(60) + bytes(60 * 32000)
    limits.check_attachments([llm.Attachment(content=short, type="audio/wav")] * 19, limits.MISTRAL_ATTACHMENT_LIMITS)
    with pytest.raises(MistralSuiteError, match="21 minutes"):
        limits.check_attachments([llm.Attachment(content=short, type="audio/wav")] * 21, limits.MISTRAL_ATTACHMENT_LIMITS)


MP3_128K = b"\xff\xfb\x90\x64"  # an MPEG-1 Layer III frame header: 128 kb/s, 44.1 kHz, joint stereo
MP3_32K = b"\xff\xfb\x10\x64"  # the same at 32 kb/s


def id3_tag(size: int) -> bytes:
    """An ID3v2.4 tag with ``size`` bytes of frames (album art, say): its size in four 7-bit bytes."""
    return b"ID3\x04\x00\x00" + bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0)) + bytes(size)


def xing_frame(frames: int) -> bytes:
    """A first MPEG-1 stereo frame carrying a Xing header (what LAME writes into VBR files) with a frame count."""
    return MP3_32K + bytes(32) + b"Xing" + (1).to_bytes(4, "big") + frames.to_bytes(4, "big")


def flac_head(seconds: float, rate: int = 44100) -> bytes:
    packed = rate << 44 | 1 << 41 | 15 << 36 | int(seconds * rate)  # stereo, 16 bits, total samples
    return b"fLaC" + bytes([0x80, 0, 0, 34]) + bytes(10) + packed.to_bytes(8, "big") + bytes(16)


def check_one(path: str, mime: str | None = None) -> None:
    limits.check_attachments([llm.Attachment(path=path, type=mime)], limits.MISTRAL_ATTACHMENT_LIMITS)


@pytest.mark.parametrize("name, head, size, mime, needle", [
    ("cbr.mp3", MP3_128K, 50 * limits.MB, None, "holds 55 minutes"),  # 50 MB at 128 kb/s: it used to go out whole
    ("tagged.mp3", id3_tag(300_000) + MP3_128K, 25 * limits.MB, None, "holds 27 minutes"),
    ("vbr.mp3", xing_frame(int(25 * 60 * 44100 / 1152)), 30 * limits.MB, None, "holds 25 minutes"),
    ("long.flac", flac_head(25 * 60), 100 * limits.MB, None, "holds 25 minutes"),
    ("talk.ogg", b"OggS", 80 * limits.MB, "audio/ogg", "holds at least 22 minutes"),  # no length up front: by size
    ("talk.m4a", b"\x00\x00\x00\x20ftypM4A ", 80 * limits.MB, "audio/mp4", "holds at least 22 minutes"),
], ids=["cbr-mp3", "tagged-mp3", "vbr-mp3", "flac", "ogg", "m4a"])  # fmt: skip
def test_compressed_audio_over_the_limit_is_refused_from_its_header(tmp_path, name, head, size, mime, needle):
    with pytest.raises(MistralSuiteError, match=f"{needle} of audio; Mistral's API takes about 20 minutes") as info:
        check_one(sparse_file(tmp_path / name, size, head), mime)
    assert "Split the recording" in str(info.value) and "llm mistral transcribe" in str(info.value)


@pytest.mark.parametrize("name, head, size", [
    ("cbr.mp3", MP3_128K, 15 * limits.MB),  # 16 minutes
    ("tagged.mp3", id3_tag(5 * limits.MB) + MP3_128K, 22 * limits.MB),  # the tag is no audio: 19, not 24 minutes
    ("vbr.mp3", xing_frame(int(10 * 60 * 44100 / 1152)), 30 * limits.MB),  # 10 minutes, whatever 32 kb/s says
    ("short.flac", flac_head(10 * 60), 100 * limits.MB),
    ("talk.ogg", b"OggS", 60 * limits.MB),  # could be 16 minutes at 512 kb/s: not clearly too long
], ids=["cbr-mp3", "tagged-mp3", "vbr-mp3", "flac", "ogg"])  # fmt: skip
def test_compressed_audio_within_the_limit_is_let_through(tmp_path, name, head, size):
    check_one(sparse_file(tmp_path / name, size, head), "audio/ogg" if name.endswith(".ogg") else None)


def test_a_50_mb_mp3_through_the_cli_is_refused_before_sending(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    big = sparse_file(tmp_path / "meeting.mp3", 50 * limits.MB, id3_tag(1000) + MP3_128K)
    assert_cli_error(invoke_llm("-m", "voxtral-small", "summarise", "-a", big), "55 minutes of audio", "20 minutes")
    assert fake.requests == []


def test_a_missing_attachment_file_is_a_clear_error(tmp_path):
    with pytest.raises(MistralSuiteError, match="Cannot read attachment .*gone.png"):
        limits.check_attachments([llm.Attachment(path=str(tmp_path / "gone.png"), type="image/png")],
                          limits.MISTRAL_ATTACHMENT_LIMITS)


def test_a_50_mb_image_through_the_cli_is_refused_before_sending(fake, monkeypatch, tmp_path):
    """It used to go out as a 70 MB request."""
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    big = sparse_file(tmp_path / "huge.png", 50 * limits.MB, PNG)
    assert_cli_error(invoke_llm("-m", "mistral-small", "describe", "-a", big), "huge.png is 50.0 MB", "10 MB")
    assert fake.requests == []


def test_images_counted_across_the_conversation(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    images = []
    for number in range(9):
        path = tmp_path / f"image-{number}.png"
        path.write_bytes(PNG + bytes([number]))  # distinct files (llm stores each attachment once)
        images += ["-a", str(path)]
    assert_cli_ok(invoke_llm("-m", "mistral-small", "first five", *images[:10]))
    assert_cli_error(invoke_llm("-c", "and four more", *images[10:]), "9 images", "earlier turns", "at most 8")
    assert len(fake.requests) == 1
