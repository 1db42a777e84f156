"""What a service takes in one request (attachment sizes and counts), checked before anything is read or sent."""

from __future__ import annotations

import os
from typing import NamedTuple

import llm

from .catalog import IMAGE_TYPES
from .errors import MistralSuiteError


class AttachmentLimits(NamedTuple):
    """What a service takes in one request, checked before anything is read, encoded or sent."""

    service: str
    image_bytes: int  # per image
    images: int  # per request, the conversation's earlier turns included
    document_bytes: int  # per document (PDF)
    audio_seconds: float  # per request; measured from headers (``audio_length``), never by decoding


MB = 1024 * 1024

# docs.mistral.ai: vision FAQ (10 MB a file, 8 images a request), Document AI (50 MB a document),
# audio FAQ (about 20 minutes of audio in a chat request).
MISTRAL_ATTACHMENT_LIMITS = AttachmentLimits("Mistral's API", 10 * MB, 8, 50 * MB, 20 * 60)

# Compressed audio whose header says nothing of its length plays at least its size at this bitrate: no MP3 or AAC
# encoder goes over 320 kb/s, Opus over 510 kb/s. So only what is clearly too long is refused.
MAX_COMPRESSED_BITS_PER_SECOND = 512_000

# MPEG audio frame headers: kb/s by (MPEG-1?, layer) for bitrate indexes 1-14, and sample rates by version bits.
_MP3_KBPS = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def attachment_name(attachment: llm.Attachment) -> str:
    return attachment.path or attachment.url or "the attachment from standard input"


def attachment_size(attachment: llm.Attachment) -> int | None:
    """The attachment's size in bytes without reading it; None for a URL the service fetches itself."""
    if attachment.content is not None:
        return len(attachment.content)
    if attachment.path:
        try:
            return os.path.getsize(attachment.path)
        except OSError as exc:
            raise MistralSuiteError(f"Cannot read attachment {attachment.path}: {exc.strerror or exc}.") from None
    return None


def _read(attachment: llm.Attachment, offset: int, length: int) -> bytes:
    """``length`` bytes of the attachment from ``offset`` (a header, never the whole file); b"" if unreadable."""
    try:
        if attachment.content is not None:
            return attachment.content[offset:offset + length]
        if attachment.path:
            with open(attachment.path, "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
    except OSError:
        pass
    return b""


def wav_seconds(attachment: llm.Attachment) -> float | None:
    """The length of a WAV file from its header (PCM or not), or None when it cannot be told cheaply."""
    import struct

    head = _read(attachment, 0, 4096)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, byte_rate = 12, 0
    while position + 8 <= len(head):
        name, size = head[position:position + 4], struct.unpack_from("<I", head, position + 4)[0]
        if name == b"fmt " and position + 16 <= len(head):
            byte_rate = struct.unpack_from("<I", head, position + 16)[0]
        elif name == b"data":
            return size / byte_rate if byte_rate else None
        position += 8 + size + (size & 1)
    return None


def flac_seconds(attachment: llm.Attachment) -> float | None:
    """The length of a FLAC file from its STREAMINFO block (total samples over sample rate), or None."""
    head = _read(attachment, 0, 26)
    if len(head) < 26 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return None
    packed = int.from_bytes(head[18:26], "big")  # sample rate (20 bits), channels, bits per sample, total samples (36)
    rate, samples = packed >> 44, packed & ((1 << 36) - 1)
    return samples / rate if rate and samples else None


def mp3_seconds(attachment: llm.Attachment, size: int) -> float | None:
    """The length of an MP3 from its first frame (after any ID3v2 tag): the frame count of its Xing, Info or VBRI
    header (VBR files), else the file's size at the frame's bitrate (CBR); None when no frame is found."""
    tag = _read(attachment, 0, 10)
    start = 0
    if tag[:3] == b"ID3" and len(tag) == 10:  # the tag's size: four 7-bit bytes, plus its header and any footer
        start = 10 + (10 if tag[5] & 0x10 else 0) + sum((byte & 0x7F) << (21 - 7 * i) for i, byte in enumerate(tag[6:]))
    block = _read(attachment, start, 4096)
    position = block.find(b"\xff")
    while 0 <= position <= len(block) - 4:
        header = int.from_bytes(block[position:position + 4], "big")
        version, layer_bits, bitrate, rate = header >> 19 & 3, header >> 17 & 3, header >> 12 & 15, header >> 10 & 3
        if header >> 21 == 0x7FF and version != 1 and layer_bits and bitrate not in (0, 15) and rate != 3:
            mpeg1, layer, mono = version == 3, 4 - layer_bits, header >> 6 & 3 == 3
            samples = 384 if layer == 1 else 1152 if mpeg1 or layer == 2 else 576
            frame = block[position:]
            xing = frame[4 + ((17 if mono else 32) if mpeg1 else (9 if mono else 17)):]
            frames = 0
            if xing[:4] in (b"Xing", b"Info") and len(xing) >= 12 and xing[7] & 1:
                frames = int.from_bytes(xing[8:12], "big")
            elif frame[36:40] == b"VBRI" and len(frame) >= 54:
                frames = int.from_bytes(frame[50:54], "big")
            if frames:
                return frames * samples / _MP3_SAMPLE_RATES[version][rate]
            return (size - start - position) * 8 / (_MP3_KBPS[mpeg1, layer][bitrate - 1] * 1000)
        position = block.find(b"\xff", position + 1)
    return None


def audio_length(attachment: llm.Attachment, mime: str, size: int | None) -> tuple[float, bool]:
    """How long an audio attachment plays, from its header alone, and whether that was measured (else it is the
    least it can be): WAV by its data size and byte rate, FLAC by its STREAMINFO, MP3 by its first frame; other
    compressed audio by its size at ``MAX_COMPRESSED_BITS_PER_SECOND``. Lossless audio whose header says nothing
    counts for nothing (its bitrate has no ceiling to judge by), as does a URL."""
    if size is None:
        return 0.0, True
    if mime in ("audio/wav", "audio/x-wav"):
        return wav_seconds(attachment) or 0.0, True
    if mime in ("audio/flac", "audio/x-flac"):
        return flac_seconds(attachment) or 0.0, True
    seconds = mp3_seconds(attachment, size) if mime in ("audio/mpeg", "audio/mp3") else None
    if seconds is not None:
        return seconds, True
    return size * 8 / MAX_COMPRESSED_BITS_PER_SECOND, False


def check_attachments(attachments: list[llm.Attachment], limits: AttachmentLimits) -> None:
    """Refuse what the service would refuse (or not even receive whole) before a byte is read or sent: every
    route that sends attachments checks the whole request here, with its own service's limits."""
    images = 0
    audio_seconds = 0.0
    audio_measured = True
    for attachment in attachments:
        mime = attachment.resolve_type() or ""
        size = attachment_size(attachment)
        name = attachment_name(attachment)
        if mime in IMAGE_TYPES:
            images += 1
            if size is not None and size > limits.image_bytes:
                raise MistralSuiteError(
                    f"Image {name} is {size / MB:.1f} MB; {limits.service} takes images of up to "
                    f"{limits.image_bytes // MB} MB. Send a smaller or more compressed copy (JPEG or WebP)."
                )
        elif mime == "application/pdf" and size is not None and size > limits.document_bytes:
            raise MistralSuiteError(
                f"Document {name} is {size / MB:.1f} MB; {limits.service} takes documents of up to "
                f"{limits.document_bytes // MB} MB. Split it, or send only the pages you need."
            )
        elif mime.startswith("audio/"):
            seconds, measured = audio_length(attachment, mime, size)
            audio_seconds += seconds
            audio_measured = audio_measured and measured
    if images > limits.images:
        raise MistralSuiteError(
            f"This request holds {images} images (earlier turns of the conversation included); {limits.service} "
            f"takes at most {limits.images} per request. Send fewer, or start a new conversation."
        )
    if audio_seconds > limits.audio_seconds:
        amount = f"{audio_seconds / 60:.0f}" if audio_measured else f"at least {audio_seconds / 60:.0f}"
        raise MistralSuiteError(
            f"This request holds {amount} minutes of audio; {limits.service} takes about "
            f"{limits.audio_seconds / 60:.0f} minutes per request. Split the recording (or send a shorter part), "
            "or transcribe it with `llm mistral transcribe`."
        )
