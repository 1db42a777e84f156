"""``llm mistral ocr``: a PDF, image or Office file (path, URL or -) as Markdown, JSON or a schema's annotation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from .documents import (
    DEFAULT_OCR_MODEL,
    OCRSettings,
    document_annotation,
    ocr_document,
    ocr_markdown,
    parse_pages,
    save_images,
)
from .media import read_media
from .settings import mistral_key


def _pages(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[tuple[int, ...]]:
    if value is None:
        return None
    try:
        return parse_pages(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _schema(value: Optional[str]) -> Optional[dict[str, Any]]:
    """``--schema`` as llm takes it: JSON, the concise syntax (``name, age int``), a file, or a saved schema id."""
    if not value:
        return None
    import sqlite_utils
    from llm.cli import load_template, logs_db_path
    from llm.migrations import migrate
    from llm.utils import resolve_schema_input

    db = sqlite_utils.Database(logs_db_path())
    migrate(db)
    schema = resolve_schema_input(db, value, load_template)
    if not isinstance(schema, dict):
        raise click.BadParameter("the schema must be a JSON object", param_hint="--schema")
    return schema


@click.command(name="ocr")
@click.argument("source")
@click.option("-m", "--model", default=DEFAULT_OCR_MODEL, show_default=True, help="OCR model")
@click.option("--pages", callback=_pages,
              help="Pages to read, as 0-based indexes and ranges: 0,2-4 is the 1st, 3rd, 4th and 5th page")
@click.option("--json", "as_json", is_flag=True, help="Print the whole response: pages, images, dimensions, usage")
@click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write the extracted images into this directory and link them from the Markdown")
@click.option("--table-format", type=click.Choice(["markdown", "html"]),
              help="Extract tables apart from the text, in this format (they are put back in place in the Markdown)")
@click.option("--header", is_flag=True, help="Extract page headers from the text (shown as <!-- Header: ... -->)")
@click.option("--footer", is_flag=True, help="Extract page footers from the text (shown as <!-- Footer: ... -->)")
@click.option("--schema", "schema_input",
              help="Extract data with a JSON schema (llm's syntax: JSON, 'name, total float', a file or a saved id); "
              "prints the annotation JSON")
@click.option("--schema-prompt", help="Instructions for the --schema extraction")
@click.option("--no-cache", is_flag=True, help="Read the document again even if it was read with these options before")
@click.option("--key", help="Mistral API key to use")
def ocr_command(source: str, model: str, pages: Optional[tuple[int, ...]], as_json: bool, images_dir: Optional[Path],
                table_format: Optional[str], header: bool, footer: bool, schema_input: Optional[str],
                schema_prompt: Optional[str], no_cache: bool, key: Optional[str]) -> None:
    """Read a document with Mistral's OCR and print it as Markdown.

    SOURCE is a PDF, an image (PNG, JPEG, WebP, GIF, TIFF, BMP, AVIF), a DOCX or PPTX file, a URL, or - for
    standard input. Each page starts with a marker naming its number: <!-- Page 1 --> is index 0 for --pages.
    Results are cached in llm's user directory by the file's sha256 and the options, so reading the same file
    again (or asking about it with -f mistral-ocr:FILE) costs nothing.

    \b
    Examples:
      llm mistral ocr report.pdf > report.md
      llm mistral ocr scan.png --pages 0
      llm mistral ocr report.pdf --pages 0,2-4 --table-format html --header --footer
      llm mistral ocr report.pdf --images report-images > report.md
      llm mistral ocr invoice.pdf --schema 'vendor, total float, date'
      curl -s https://example.com/paper.pdf | llm mistral ocr -
    """
    if schema_prompt and not schema_input:
        raise click.UsageError("--schema-prompt needs --schema")
    settings = OCRSettings(
        model=model, pages=pages, table_format=table_format, header=header, footer=footer,
        images=images_dir is not None, schema=_schema(schema_input), annotation_prompt=schema_prompt,
    )  # fmt: skip
    media = read_media(source)
    result = ocr_document(media, settings, mistral_key(key), use_cache=not no_cache)
    image_paths = save_images(result, images_dir) if images_dir is not None else {}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif settings.schema is not None:
        click.echo(json.dumps(document_annotation(result), indent=2))
    else:
        click.echo(ocr_markdown(result, image_paths))
