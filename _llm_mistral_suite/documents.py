"""OCR of documents and images (POST /v1/ocr), inline or uploaded; its cache and Markdown; PDFs uploaded for chat."""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any, NamedTuple, Optional

import llm

from .catalog import DOCUMENT_TYPES
from .errors import MistralSuiteError
from .files import delete_file, signed_url, upload_file
from .limits import MISTRAL_ATTACHMENT_LIMITS
from .media import OFFICE_TYPES, Media, ResultCache, describe_type, rejected_input
from .progress import Progress
from .settings import inline_limit_bytes, mistral_endpoint
from .transport import request_json
from .wire import strict_schema

DEFAULT_OCR_MODEL = "mistral-ocr-latest"
MAX_DOCUMENT_BYTES = MISTRAL_ATTACHMENT_LIMITS.document_bytes  # one OCR document (and 1,000 pages): the same limit
OCR_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/tiff", "image/bmp",
                             "image/avif"})  # fmt: skip
OCR_TYPES = frozenset({"application/pdf", *OCR_IMAGE_TYPES, *OFFICE_TYPES.values()})
OCR_TYPES_TEXT = "a PDF, an image (PNG, JPEG, WebP, GIF, TIFF, BMP, AVIF), or a DOCX or PPTX file"


class OCRSettings(NamedTuple):
    """What to ask of ``POST /v1/ocr`` besides the document; every field changes the result (and the cache key)."""

    model: str = DEFAULT_OCR_MODEL
    pages: Optional[tuple[int, ...]] = None  # 0-based page indexes
    table_format: Optional[str] = None  # markdown | html: tables apart from the page text
    header: bool = False  # extract page headers from the text
    footer: bool = False
    images: bool = False  # the extracted images' data
    schema: Optional[dict[str, Any]] = None  # document_annotation_format
    annotation_prompt: Optional[str] = None

    def request_fields(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model}
        if self.pages is not None:
            body["pages"] = list(self.pages)
        if self.table_format:
            body["table_format"] = self.table_format
        if self.header:
            body["extract_header"] = True
        if self.footer:
            body["extract_footer"] = True
        if self.images:
            body["include_image_base64"] = True
        if self.schema is not None:
            body["document_annotation_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "document_annotation", "schema": strict_schema(self.schema), "strict": True},
            }
        if self.annotation_prompt:
            body["document_annotation_prompt"] = self.annotation_prompt
        return body


def parse_pages(text: str) -> tuple[int, ...]:
    """``0,2-4`` -> (0, 2, 3, 4): Mistral's 0-based page indexes, ranges inclusive."""
    indexes: list[int] = []
    for part in (piece.strip() for piece in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ValueError(f"{part!r} is not a page index or range: use 0-based indexes such as 0,2-4")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ValueError(f"the range {part} runs backwards")
        indexes.extend(range(first, last + 1))
    return tuple(dict.fromkeys(indexes))


def check_document(media: Media) -> None:
    """Refuse, before sending anything, a local file OCR cannot read or the service would refuse for its size."""
    if media.url is not None:
        return
    if media.mime not in OCR_TYPES:
        raise MistralSuiteError(
            f"{media.name} is {describe_type(media.mime)}: Mistral's OCR reads {OCR_TYPES_TEXT}."
            + (" To transcribe audio, use `llm mistral transcribe`." if (media.mime or "").startswith("audio/") else "")
        )
    size = media.size or 0
    if size > MAX_DOCUMENT_BYTES:
        raise MistralSuiteError(
            f"{media.name} is {size / 1024 ** 2:,.1f} MB; Mistral's OCR takes documents of at most "
            f"{MAX_DOCUMENT_BYTES // 1024 ** 2} MB (and 1,000 pages). Split it into smaller files "
            "(for example `qpdf --split-pages=100 in.pdf part.pdf`) and OCR each."
        )


def url_document(url: str, mime: Optional[str]) -> dict[str, Any]:
    """The document chunk for a URL the service fetches itself."""
    if mime in OCR_IMAGE_TYPES:
        return {"type": "image_url", "image_url": url}
    return {"type": "document_url", "document_url": url}


def inline_document(media: Media) -> dict[str, Any]:
    """The document chunk carrying the file itself, as a data URI."""
    if media.mime in OCR_IMAGE_TYPES:
        return {"type": "image_url", "image_url": media.data_uri()}
    return {"type": "document_url", "document_url": media.data_uri(), "document_name": media.filename}


def ocr_document(media: Media, settings: OCRSettings, key: str, *, use_cache: bool = True,
                 progress: Optional[Progress] = None) -> dict[str, Any]:
    """The OCR response for ``media``: from the cache when the same content was read with the same settings,
    else from the service (inline up to ``LLM_MISTRAL_INLINE_LIMIT_MB``, else uploaded, then deleted)."""
    check_document(media)
    cache = ResultCache("ocr")
    cache_key = cache.key(media, settings.request_fields())
    cached = cache.get(cache_key) if use_cache else None
    if cached is not None and isinstance(cached.get("pages"), list):
        return cached
    progress = progress or Progress()
    try:
        if media.url is None and (media.size or 0) > inline_limit_bytes():
            result = _ocr_uploaded(media, settings, key, progress)
        else:
            document = url_document(media.url, media.mime) if media.url is not None else inline_document(media)
            with progress.waiting(f"OCR of {media.name} ({settings.model})"):
                result = _post_ocr(document, settings, key)
    except MistralSuiteError as error:
        raise ocr_error(media, settings, error) from None
    pages = result.get("pages")
    progress.note(f"{media.name}: {len(pages)} pages read by {result.get('model') or settings.model}")
    cache.put(cache_key, result)
    return result


def _ocr_uploaded(media: Media, settings: OCRSettings, key: str, progress: Progress) -> dict[str, Any]:
    """OCR of a file uploaded to /v1/files first (purpose ``ocr``) and deleted again, whatever happens."""
    with media.open() as source:
        uploading = progress.reading(source, media.size or 0, f"Uploading {media.name}")
        uploaded = upload_file(key, uploading, media.filename, "ocr", media.mime or "application/pdf")
    try:
        with progress.waiting(f"OCR of {media.name} ({settings.model})"):
            return _post_ocr({"type": "file", "file_id": uploaded.id}, settings, key)
    finally:
        try:
            delete_file(key, uploaded.id)
        except MistralSuiteError as error:
            progress.warn(f"could not delete the upload of {media.name} ({uploaded.id}): {error.message}")


def _post_ocr(document: dict[str, Any], settings: OCRSettings, key: str) -> dict[str, Any]:
    body = {**settings.request_fields(), "document": document}
    result = request_json(mistral_endpoint(), "POST", "/ocr", key, body)
    if not isinstance(result, dict) or not isinstance(result.get("pages"), list):
        raise MistralSuiteError("Mistral's OCR answered without pages.")
    return result


def ocr_error(media: Media, settings: OCRSettings, error: MistralSuiteError) -> MistralSuiteError:
    """The error to show for a failed OCR of ``media``."""
    detail = error.detail.lower()
    if error.status == 404 and ("model" in detail or "router" in detail):
        return MistralSuiteError(
            f"{settings.model} is not an OCR model of Mistral's API ({error.detail.rstrip('.')}). "
            f"Use {DEFAULT_OCR_MODEL} (the default) or another mistral-ocr-* model.", status=404, detail=error.detail,
        )
    hint = ""
    if media.url is not None and ("download" in detail or "fetch" in detail or "url" in detail):
        hint = "Check that the URL is public and points at the document itself, or download it and give the file."
    elif "page" in detail and settings.pages is not None:
        hint = "--pages counts from 0: the first page is 0."
    elif error.status == 400 and media.url is None:
        hint = f"Check that it is a readable file: Mistral's OCR reads {OCR_TYPES_TEXT}."
    return rejected_input(media, "Mistral's OCR", error, hint)


def image_data(encoded: str) -> bytes:
    """The bytes of an ``image_base64`` (a data URI or plain base64)."""
    payload = encoded.partition(";base64,")[2] if encoded.startswith("data:") else encoded
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise MistralSuiteError("Mistral's OCR sent an image that is not valid base64.") from None


ImagePaths = dict[tuple[int, str], str]  # (page number in the response, image id) -> the file written


def save_images(result: dict[str, Any], directory: Path) -> ImagePaths:
    """Write every extracted image of ``result`` into ``directory``, named by its id (an id seen on an earlier
    page gets the page's number in front), and say where each went."""
    directory.mkdir(parents=True, exist_ok=True)
    written: ImagePaths = {}
    names: set[str] = set()
    for number, page in enumerate(result.get("pages") or ()):
        for image in page.get("images") or ():
            image_id, encoded = str(image.get("id") or ""), image.get("image_base64")
            name = Path(image_id).name
            if not name or not isinstance(encoded, str):
                continue
            if name in names:
                name = f"page{number + 1}-{name}"
            names.add(name)
            path = directory / name
            path.write_bytes(image_data(encoded))
            written[(number, image_id)] = path.as_posix()
    return written


def _comment(label: str, text: str) -> str:
    return f"<!-- {label}: {' '.join(text.split()).replace('--', '- -')} -->"


def ocr_markdown(result: dict[str, Any], image_paths: Optional[ImagePaths] = None) -> str:
    """The document as Markdown: each page opens with ``<!-- Page N -->`` (N = index + 1); tables extracted apart
    are put back where their links stand; image links point at ``image_paths`` where those were written."""
    blocks = []
    for number, page in enumerate(result.get("pages") or ()):
        text = page.get("markdown") or ""
        for table in page.get("tables") or ():
            if table.get("id") and isinstance(table.get("content"), str):
                text = text.replace(f"[{table['id']}]({table['id']})", table["content"])
        for (on_page, image_id), path in (image_paths or {}).items():
            if on_page != number:
                continue
            text = re.sub(r"(!\[[^\]]*\]\()" + re.escape(image_id) + r"\)", lambda m: f"{m[1]}{path})", text)
        index = page.get("index", number)
        parts = [f"<!-- Page {index + 1 if isinstance(index, int) else index} -->"]
        if page.get("header"):
            parts.append(_comment("Header", page["header"]))
        if text.strip():
            parts.append(text.strip())
        if page.get("footer"):
            parts.append(_comment("Footer", page["footer"]))
        blocks.append("\n\n".join(parts))
    return "\n\n".join(blocks)


def document_annotation(result: dict[str, Any]) -> Any:
    """The ``--schema`` annotation of the document, decoded."""
    annotation = result.get("document_annotation")
    if not isinstance(annotation, str) or not annotation.strip():
        raise MistralSuiteError("Mistral's OCR returned no document annotation for the schema.")
    try:
        return json.loads(annotation)
    except ValueError:
        message = f"Mistral's OCR returned an annotation that is not JSON: {annotation[:200]!r}"
        raise MistralSuiteError(message) from None


# --- PDFs attached to chat prompts (`llm -a report.pdf`) ---------------------------------------------


class DocumentUploads(NamedTuple):
    """The large PDFs of a prompt, uploaded for one request: what to send instead of each, and what to delete."""

    replaced: dict[int, llm.Attachment]  # id(original attachment) -> its signed URL as an attachment
    file_ids: list[str]


def upload_large_documents(prompt: llm.Prompt, key: str) -> DocumentUploads:
    """Upload every local PDF of the conversation larger than ``LLM_MISTRAL_INLINE_LIMIT_MB`` (purpose ``ocr``)
    and replace it with a signed URL; smaller ones travel inline. The request's attachments are checked against
    the service's limits first: nothing is uploaded for a request that would be refused. Call
    ``delete_uploads`` afterwards."""
    from llm.parts import AttachmentPart

    from .limits import check_attachments

    attachments = [part.attachment for message in prompt.messages for part in message.parts
                   if isinstance(part, AttachmentPart) and part.attachment is not None]
    limit = inline_limit_bytes()
    large: dict[int, tuple[llm.Attachment, Path | None]] = {}
    for attachment in attachments:
        if attachment.url or attachment.resolve_type() not in DOCUMENT_TYPES:
            continue
        path = Path(attachment.path) if attachment.path else None
        if (path.stat().st_size if path else len(attachment.content or b"")) > limit:
            large[id(attachment)] = (attachment, path)
    uploads = DocumentUploads({}, [])
    if not large:
        return uploads
    check_attachments(attachments, MISTRAL_ATTACHMENT_LIMITS)
    try:
        for attachment, path in large.values():
            name = path.name if path else "document.pdf"
            uploaded = upload_file(key, path or attachment.content or b"", name, "ocr", "application/pdf")
            uploads.file_ids.append(uploaded.id)
            url = signed_url(key, uploaded.id, expiry_hours=1)
            uploads.replaced[id(attachment)] = llm.Attachment(type="application/pdf", url=url)
    except BaseException:
        delete_uploads(key, uploads)
        raise
    return uploads


def delete_uploads(key: str, uploads: DocumentUploads) -> None:
    """Delete what ``upload_large_documents`` uploaded (a failure to delete is a warning, not the prompt's failure)."""
    for file_id in uploads.file_ids:
        try:
            delete_file(key, file_id)
        except MistralSuiteError as error:
            Progress().warn(f"could not delete the uploaded document {file_id}: {error.message}")
