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
    audio_seconds: float  # per request; measured where the file says it cheaply (WAV)


MB = 1024 * 1024

# docs.mistral.ai: vision FAQ (10 MB a file, 8 images a request), Document AI (50 MB a document),
# audio FAQ (about 20 minutes of audio in a chat request).
MISTRAL_ATTACHMENT_LIMITS = AttachmentLimits("Mistral's API", 10 * MB, 8, 50 * MB, 20 * 60)


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


def wav_seconds(attachment: llm.Attachment) -> float | None:
    """The length of a WAV file from its header (PCM or not), or None when it cannot be told cheaply."""
    import struct

    try:
        if attachment.content is not None:
            head = attachment.content[:4096]
        elif attachment.path:
            with open(attachment.path, "rb") as handle:
                head = handle.read(4096)
        else:
            return None
    except OSError:
        return None
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


def check_attachments(attachments: list[llm.Attachment], limits: AttachmentLimits) -> None:
    """Refuse what the service would refuse (or not even receive whole) before a byte is read or sent: every
    route that sends attachments checks the whole request here, with its own service's limits."""
    images = 0
    audio_seconds = 0.0
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
        elif mime in ("audio/wav", "audio/x-wav"):
            audio_seconds += wav_seconds(attachment) or 0.0
    if images > limits.images:
        raise MistralSuiteError(
            f"This request holds {images} images (earlier turns of the conversation included); {limits.service} "
            f"takes at most {limits.images} per request. Send fewer, or start a new conversation."
        )
    if audio_seconds > limits.audio_seconds:
        raise MistralSuiteError(
            f"This request holds {audio_seconds / 60:.0f} minutes of audio; {limits.service} takes about "
            f"{limits.audio_seconds / 60:.0f} minutes per request. Split the recording, or transcribe it."
        )
