"""Embedding models of Mistral's API (``llm embed``): requests packed by tokens, sent by a few paced workers."""

from __future__ import annotations

import array
import binascii
import re
import sys
from typing import Any, Iterable, Iterator

import llm

from .catalog import load_catalog
from .errors import MistralSuiteError, not_utf8
from .retry import Pace
from .settings import Endpoint, embed_concurrency, mistral_endpoint, mistral_key
from .transport import request_json

MAX_INPUTS_PER_REQUEST = 512
MAX_TOKENS_PER_REQUEST = 16384
MAX_TOKENS_PER_INPUT = 8192
CODESTRAL_EMBED_DIMENSIONS = (256, 512, 1024, 1536, 3072)

# Base URLs whose service refused ``encoding_format: base64`` or answered it with something else in this
# process: they get JSON floats from then on.
FLOATS_ONLY: set[str] = set()


_WORDISH = re.compile(r"\w+|[^\w\s]")
# The same on ASCII text, as bytes: two to three times faster (\w and \s of str patterns, spelled out).
_ASCII_WORDISH = re.compile(rb"[A-Za-z0-9_]+|[^A-Za-z0-9_ \t\n\r\f\v\x1c-\x1f]")


def estimate_tokens(text: str) -> int:
    """A deliberately high token count without a tokenizer: Mistral's tokenizers average about four
    UTF-8 bytes a token on English prose and fewer on code and other scripts; we assume three, and at
    least one token per word and per punctuation mark (numbers, CSV and code are dense in those).
    A low estimate costs one split request (see ``EmbeddingJob.embed``), never a failure."""
    raw = text.encode("utf-8")
    marks = _ASCII_WORDISH.findall(raw) if len(raw) == len(text) else _WORDISH.findall(text)
    return max(len(raw) // 3, len(marks)) + 1


def pack_batches(texts: list[str], max_inputs: int, max_tokens: int) -> list[range]:
    """Consecutive index ranges, each within the per-request input and (estimated) token limits."""
    batches: list[range] = []
    start, tokens = 0, 0
    for index, text in enumerate(texts):
        cost = estimate_tokens(text)
        if index > start and (index - start >= max_inputs or tokens + cost > max_tokens):
            batches.append(range(start, index))
            start, tokens = index, 0
        tokens += cost
    if start < len(texts):
        batches.append(range(start, len(texts)))
    return batches


def embedding_item_labels(count: int) -> tuple[list[str], str]:
    """How to name each of the ``count`` items llm handed to ``embed_batch`` in an error, and what a
    failure leaves unstored.

    llm passes no ids to embedding models, so they are read from its calling frames (call this on the
    caller's thread, not from a worker): ``Collection.embed_multi_with_metadata`` (``llm embed-multi``)
    holds the batch's ``(id, content, metadata)`` rows in ``filtered_batch``; ``Collection.embed``
    (``llm embed COLLECTION ID``) has the ``id``. Elsewhere items are numbered."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_name
        local = frame.f_locals if name in ("embed_multi_with_metadata", "embed") else {}
        if type(local.get("self")).__name__ == "Collection":
            rows = local.get("filtered_batch")
            if name == "embed_multi_with_metadata" and isinstance(rows, list) and len(rows) == count:
                return [f"Item {row[0]!r}" for row in rows], (
                    f"Nothing from this batch of {count} item{'s' * (count != 1)} was stored "
                    "(earlier batches of `llm embed-multi`, if any, were)."
                )
            if name == "embed" and count == 1 and "id" in local:
                return [f"Item {local['id']!r}"], "Nothing was stored."
        frame = frame.f_back
    if count == 1:
        return ["The input"], ""
    return [f"Item {index + 1} of {count}" for index in range(count)], f"None of the {count} items was embedded."


# Where a service's error names the rejected input of a request: "Input id 3 ..." (Mistral), "input 3",
# "input.3: ..." (a 422's location), "input[3]", "inputs[3]", "index 3".
ROW_IN_ERROR = r"(?i)\b(?:inputs?|index)(?: id)?(?:\s+|\.|\[)(\d+)\b"  # compiled on the first error


def input_problem(text: object) -> str | None:
    """Why ``text`` cannot be embedded (a sentence that follows the item's name), or None when it can."""
    if not isinstance(text, str):
        return "is not text; this model embeds text only."
    bad = not_utf8(text)
    if bad:
        return bad
    if not text.strip():
        return "is empty (or only whitespace), which cannot be embedded."
    if len(text.encode("utf-8")) // 6 > MAX_TOKENS_PER_INPUT:  # too long even by a low estimate
        return (f"is too long to embed (about {estimate_tokens(text)} tokens; the limit is "
                f"{MAX_TOKENS_PER_INPUT} per input). Split it into smaller pieces.")
    return None


def _as_sentence(text: str) -> str:
    return text.rstrip().rstrip(".") + "."


def _asks_for_smaller_batches(error: MistralSuiteError) -> bool:
    return error.status == 400 and "too many" in error.detail.lower()


class EmbeddingJob:
    """One ``embed_batch`` call: packs requests, runs them on a few threads, splits what the service
    finds too big, and returns the vectors in input order."""

    def __init__(
        self, model: "MistralEmbedding", texts: list[str], key: str | None,
        labels: list[str] | None = None, unstored: str = "",
    ) -> None:
        self.model, self.texts, self.key = model, texts, key
        self.labels = labels or embedding_item_labels(len(texts))[0]  # computed on the caller's thread
        self.unstored = unstored  # what a failure tells about rows not stored
        self.pace = Pace(model.concurrency())

    def run(self) -> list[list[float]]:
        from concurrent.futures import ThreadPoolExecutor

        batches = pack_batches(self.texts, self.model.max_inputs, self.model.max_tokens)
        if len(batches) == 1:
            return self.embed(batches[0])
        with ThreadPoolExecutor(max_workers=min(len(batches), self.pace.ceiling)) as pool:
            futures = [pool.submit(self.embed, batch) for batch in batches]
            try:
                return [vector for future in futures for vector in future.result()]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def embed(self, batch: range, base64: bool | None = None) -> list[list[float]]:
        """The vectors of ``batch``: asked as base64 float32 (a fifth of the bytes of JSON floats, decoded
        without parsing numbers) unless this service refused it; a refusal, or an answer that is not the
        model's vectors in either form, is retried as JSON floats and then floats are asked for from here on."""
        endpoint = self.model.endpoint()
        if base64 is None:
            base64 = self.model.encoding_format == "base64" and endpoint.base_url not in FLOATS_ONLY
        body = self.model.request_body([self.texts[i] for i in batch], self.key, base64)
        try:
            answer = request_json(endpoint, "POST", "/embeddings", self.key, body, self.pace)
        except MistralSuiteError as error:
            if _asks_for_smaller_batches(error) and len(batch) > 1:  # our estimate was low: halve and carry on
                middle = len(batch) // 2
                return self.embed(batch[:middle], base64) + self.embed(batch[middle:], base64)
            if base64 and error.status in (400, 422) and not re.search(ROW_IN_ERROR, error.detail):
                return self.embed_as_floats(batch)  # perhaps base64 itself was refused: floats tell
            raise self.failure(error, batch) from None
        vectors = self.vectors(answer, batch, base64)
        if vectors is None:  # an encoding we cannot read
            return self.embed_as_floats(batch)
        return vectors

    def embed_as_floats(self, batch: range) -> list[list[float]]:
        vectors = self.embed(batch, base64=False)
        FLOATS_ONLY.add(self.model.endpoint().base_url)  # floats worked where base64 did not
        return vectors

    def failure(self, error: MistralSuiteError, batch: range) -> MistralSuiteError:
        match = re.search(ROW_IN_ERROR, error.detail)
        if error.status in (400, 413, 422) and (len(batch) == 1 or (match and int(match.group(1)) < len(batch))):
            index = batch[0] if len(batch) == 1 else batch[int(match.group(1))]
            what = f"{self.labels[index]} could not be embedded: {error.detail or error.message}"
        else:
            what = error.message
        message = _as_sentence(what) + (f" {self.unstored}" if self.unstored else "")
        return MistralSuiteError(message, status=error.status, detail=error.detail)

    def vectors(self, answer: Any, batch: range, base64: bool = False) -> list[list[float]] | None:
        """The answer's vectors in input order, each a list of floats or base64 float32. Asked for base64:
        None when one is neither, or does not decode to the model's dimensions (another encoding)."""
        endpoint = self.model.endpoint()
        try:
            rows = sorted(enumerate(answer["data"]), key=lambda pair: pair[1].get("index", pair[0]))
            vectors = [row["embedding"] for _, row in rows]
        except (KeyError, TypeError, AttributeError):
            raise MistralSuiteError(f"{endpoint.label} answered /embeddings without embeddings.") from None
        unstored = f" {self.unstored}" if self.unstored else ""
        if len(vectors) != len(batch):
            raise MistralSuiteError(
                f"{endpoint.label} returned {len(vectors)} embeddings for {len(batch)} inputs.{unstored}"
            )
        if any(vector.__class__ is not list for vector in vectors):
            decoded = decode_base64_vectors(vectors, self.model.dimensions)
            if decoded is None and base64:
                return None
            vectors = decoded or vectors  # else the check below says what is wrong
        expected = self.model.dimensions or len(vectors[0])
        for vector in vectors:
            if not isinstance(vector, list) or len(vector) != expected:
                size = len(vector) if isinstance(vector, list) else type(vector).__name__
                raise MistralSuiteError(
                    f"{endpoint.label} returned a {size}-dimension vector for {self.model.model_id}, "
                    f"which has {expected} dimensions; it was not used.{unstored}"
                )
        return vectors


def decode_base64_vectors(vectors: list[Any], dimensions: int | None) -> list[Any] | None:
    """Vectors sent as base64 little-endian float32 as lists of floats (lists left as they are); None when
    one is neither or does not decode to ``dimensions`` floats (or, unknown, to as many as the first)."""
    decoded: list[Any] = []
    for vector in vectors:
        if vector.__class__ is not list and vector.__class__ is not str:
            return None
        if vector.__class__ is str:
            try:
                raw = binascii.a2b_base64(vector)
            except (binascii.Error, ValueError):
                return None
            size = dimensions or (len(raw) // 4 if not decoded else len(decoded[0]))
            if len(raw) != 4 * size or not size:
                return None
            values = array.array("f")
            values.frombytes(raw)
            if sys.byteorder == "big":
                values.byteswap()
            vector = values.tolist()
        decoded.append(vector)
    return decoded


class MistralEmbedding(llm.EmbeddingModel):
    """An embedding model of Mistral's API; ``output_dimension`` is part of the model id."""

    needs_key = "mistral"
    encoding_format: str | None = "base64"  # what to ask for (None: the server's default, JSON floats)
    key_env_var = "LLM_MISTRAL_KEY"
    batch_size = 16384  # llm hands over big batches; requests are packed by tokens here
    max_inputs = MAX_INPUTS_PER_REQUEST
    max_tokens = MAX_TOKENS_PER_REQUEST

    def __init__(self, model_id: str, api_name: str, dimensions: int | None, output_dimension: int | None = None):
        self.model_id = model_id
        self.api_name = api_name
        self.dimensions = dimensions
        self.output_dimension = output_dimension

    def get_key(self, explicit_key: str | None = None) -> str:
        return mistral_key(explicit_key, self.key)

    def endpoint(self) -> Endpoint:
        return mistral_endpoint()

    @staticmethod
    def concurrency() -> int:
        return embed_concurrency()

    def request_body(self, texts: list[str], key: str | None, base64: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.api_name, "input": texts}
        if self.output_dimension:
            body["output_dimension"] = self.output_dimension
        if base64:
            body["encoding_format"] = "base64"
        return body

    def embed_batch(self, items: Iterable[str | bytes], *, key: str | None = None) -> Iterator[list[float]]:
        texts = list(items)
        if not texts:
            return
        labels, unstored = embedding_item_labels(len(texts))  # here, on llm's thread: the ids are in its frames
        unstored = f" {unstored}" if unstored else ""
        for index, text in enumerate(texts):
            problem = input_problem(text)
            if problem:
                raise MistralSuiteError(f"{labels[index]} {problem}{unstored}")
        key = key or self.get_key()
        yield from EmbeddingJob(self, texts, key, labels, unstored.strip()).run()


def embedding_models() -> list[tuple[MistralEmbedding, tuple[str, ...]]]:
    """The API's embedding models with their aliases: one model id per codestral-embed dimension."""
    models: list[tuple[MistralEmbedding, tuple[str, ...]]] = []
    for entry in load_catalog():
        if "embedding" not in entry.capabilities:
            continue
        if entry.api_name == "codestral-embed":
            for size in CODESTRAL_EMBED_DIMENSIONS:
                aliases = ("codestral-embed",) if size == 1536 else ()
                models.append((MistralEmbedding(f"mistral/codestral-embed-{size}", entry.api_name, size, size), aliases))
        else:
            dimensions = 1024 if entry.api_name.startswith("mistral-embed") else None
            models.append((MistralEmbedding(entry.model_id, entry.api_name, dimensions), entry.aliases))
    return models
