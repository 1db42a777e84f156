"""Embeddings (issue 3): token-aware packing, concurrent paced requests, exact results and clear errors.

Unit tests call the module in-process against the fake server; the end-to-end tests run the installed
``llm`` CLI (``llm embed``, ``llm embed-multi`` from CSV and from files, ``llm similar``) as subprocesses.
Every request body the fake receives is validated against ``EmbeddingRequest`` (the ``fake`` fixture).
"""

from __future__ import annotations

import base64
import csv
import json
import sqlite3
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import llm
import pytest
import sqlite_utils
from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok, bodies, validate_request
from fake_mistral import JSONReply, _vector, count_tokens, documents, error_reply

from _llm_mistral_suite import embeddings
from _llm_mistral_suite.embeddings import embedding_models
from _llm_mistral_suite.embeddings import MistralEmbedding, estimate_tokens, pack_batches
from _llm_mistral_suite.errors import MistralSuiteError

EMBEDDINGS = "/v1/embeddings"


def mistral_embed() -> MistralEmbedding:
    return MistralEmbedding("mistral/mistral-embed", "mistral-embed", 1024)


def codestral_256() -> MistralEmbedding:  # small vectors: cheap for tests that only count requests
    return MistralEmbedding("mistral/codestral-embed-256", "codestral-embed", 256, 256)


@pytest.fixture
def api(fake, monkeypatch):
    """In-process use of the module against ``fake`` (with no memory of a base64 refusal)."""
    monkeypatch.setattr(embeddings, "FLOATS_ONLY", set())
    monkeypatch.setenv("LLM_MISTRAL_BASE_URL", fake.base_url)
    monkeypatch.setenv("LLM_MISTRAL_KEY", SENTINEL_KEY)
    monkeypatch.delenv("LLM_MISTRAL_EMBED_CONCURRENCY", raising=False)
    return fake


def within_limits(fake) -> list[dict]:
    """The embeddings request bodies, each checked against the service's per-request limits."""
    sent = bodies(fake, EMBEDDINGS)
    for body in sent:
        validate_request(body, "EmbeddingRequest")
        assert len(body["input"]) <= 512
        assert sum(fake.count_tokens(text) for text in body["input"]) <= 16384
    return sent


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "content"])
        writer.writerows(rows)
    return path


def stored(db: Path, collection: str) -> dict[str, list[float]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select e.id, e.embedding from embeddings e join collections c on c.id = e.collection_id "
            "where c.name = ?", (collection,)
        ).fetchall()
    return {id: list(llm.decode(blob)) for id, blob in rows}


def close(a: list[float], b: tuple[float, ...] | list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b))


# --- estimate and packing -----------------------------------------------------------------------------


SAMPLES = {
    "prose": documents(1)[0],
    "code": 'def f(x):\n    return {"a": x[0] + 1, "b": [i ** 2 for i in range(10)]}\n' * 5,
    "numbers": ",".join(str(i) for i in range(200)),
    "cjk": "日本語のテキストを埋め込みます。" * 10,
    "emoji": "😀🎉👍" * 30,
    "punctuation": "!?.,;:" * 30,
    "url": "https://example.com/a/b/c?x=1&y=2#frag " * 5,
    "long words": "Donaudampfschifffahrtsgesellschaftskapitän " * 10,
}


@pytest.mark.parametrize("kind", SAMPLES)
def test_estimate_tokens_is_high_without_waste(kind):
    text = SAMPLES[kind]
    estimate = estimate_tokens(text)
    # Above what real tokenizers give (about 4 UTF-8 bytes a token) and about the fake's pessimistic count;
    # never more than one token per byte.
    assert estimate >= len(text.encode()) / 4
    assert estimate >= 0.9 * count_tokens(text)
    assert estimate <= len(text.encode()) + 1
    if kind == "prose":
        assert estimate <= 1.4 * count_tokens(text)  # packing stays dense: 2,000 docs in <= 20 requests


def test_estimate_tokens_ascii_path_counts_as_the_unicode_one():
    import re

    wordish = re.compile(r"\w+|[^\w\s]")  # what ASCII text is counted with, as bytes
    texts = [*SAMPLES.values(), *documents(200), "".join(chr(c) for c in range(128)) * 3, "a\x1cb\x1fc\x0bd"]
    for text in texts:
        assert estimate_tokens(text) == max(len(text.encode()) // 3, len(wordish.findall(text))) + 1, text[:40]


def test_estimate_tokens_small_inputs():
    assert estimate_tokens("") == 1
    assert estimate_tokens("a") >= 1
    assert estimate_tokens("a b c d") >= 4  # one per word at least


def check_packing(texts: list[str], batches: list[range], max_inputs: int, max_tokens: int) -> None:
    assert [i for batch in batches for i in batch] == list(range(len(texts)))  # contiguous, in order, complete
    for batch in batches:
        assert 1 <= len(batch) <= max_inputs
        assert len(batch) == 1 or sum(estimate_tokens(texts[i]) for i in batch) <= max_tokens


def test_pack_batches_2000_documents():
    docs = documents(2000)
    batches = pack_batches(docs, 512, 16384)
    check_packing(docs, batches, 512, 16384)
    total = sum(count_tokens(d) for d in docs)
    assert -(-total // 16384) <= len(batches) <= 20  # about 13 by the token limit alone


def test_pack_batches_input_limit():
    texts = ["tiny"] * 1100
    batches = pack_batches(texts, 512, 16384)
    assert [len(b) for b in batches] == [512, 512, 76]
    check_packing(texts, batches, 512, 16384)


def test_pack_batches_edges():
    assert pack_batches([], 512, 16384) == []
    big = "word " * 10000  # over the request limit by the estimate alone: travels alone
    texts = ["a", big, "b", "c"]
    batches = pack_batches(texts, 512, 16384)
    assert [list(b) for b in batches] == [[0], [1], [2, 3]]
    docs = documents(300)
    check_packing(docs, pack_batches(docs, 7, 500), 7, 500)


# --- the job: splitting, order, concurrency, pacing ---------------------------------------------------


def test_too_many_tokens_splits_in_halves_and_keeps_order(api):
    api.count_tokens = lambda text: 3 * count_tokens(text)  # the service counts far more than we estimate
    docs = documents(300)
    vectors = list(codestral_256().embed_multi(docs))
    assert all(close(v, _vector(d, 256)) for v, d in zip(vectors, docs)) and len(vectors) == 300
    sizes = [len(b["input"]) for b in bodies(api, EMBEDDINGS)]
    refused = [b for b in bodies(api, EMBEDDINGS) if sum(api.count_tokens(t) for t in b["input"]) > 16384]
    assert refused, "the fake should have refused the first, too big, requests"
    packs = pack_batches(docs, 512, 16384)
    assert sizes.count(len(packs[0])) >= 1 and len(packs[0]) // 2 in sizes  # a pack, then its halves
    assert sum(1 for b in bodies(api, EMBEDDINGS) if b not in refused) >= len(packs)


def test_too_many_inputs_splits(api):
    api.max_inputs = 100  # a service with a lower input limit than ours
    docs = [f"short text {i}" for i in range(300)]
    vectors = list(codestral_256().embed_multi(docs))
    assert all(close(v, _vector(d, 256)) for v, d in zip(vectors, docs)) and len(vectors) == 300


def test_results_in_input_order_when_replies_come_back_out_of_order(api):
    original = api._embeddings

    def slow_first(request):  # the first pack answers last
        if request["input"][0].startswith("Document 0:"):
            time.sleep(0.3)
        return original(request)

    api._embeddings = slow_first
    docs = documents(1200)
    vectors = list(codestral_256().embed_multi(docs))
    assert len(vectors) == 1200 and all(close(v, _vector(d, 256)) for v, d in zip(vectors, docs))
    assert api.max_concurrency_seen > 1


@pytest.mark.parametrize("setting, expected", [(None, 4), ("2", 2), ("1", 1)])
def test_concurrency_default_and_setting(api, monkeypatch, setting, expected):
    if setting:
        monkeypatch.setenv("LLM_MISTRAL_EMBED_CONCURRENCY", setting)
    api.latency = 0.15
    docs = documents(800)  # 7 packs
    assert len(list(codestral_256().embed_multi(docs))) == 800
    assert api.max_concurrency_seen == expected
    within_limits(api)


def test_retry_after_pauses_every_worker(api):
    arrivals: list[float] = []
    serve, original = api._serve, api._embeddings

    def timed(handler):
        arrivals.append(time.monotonic())
        serve(handler)

    def slow(request):  # normal replies take 0.1 s; the scripted 429 comes back at once
        time.sleep(0.1)
        return original(request)

    api._serve, api._embeddings = timed, slow
    api.queue(error_reply(429, "Requests rate limit exceeded", retry_after=0.4))
    docs = documents(800)
    start = time.monotonic()
    vectors = list(codestral_256().embed_multi(docs))
    assert len(vectors) == 800 and all(close(v, _vector(d, 256)) for v, d in zip(vectors, docs))
    # The first request got the 429; the 3 others in flight with it finish, then nobody starts a request
    # during the wait it asked for, not only the worker that got it.
    first, later = arrivals[0], sorted(arrivals)[4:]
    assert later and min(later) - first >= 0.37, [round(t - first, 3) for t in arrivals]
    assert time.monotonic() - start >= 0.4


def test_dimension_mismatch_is_an_error(api):
    api.queue(JSONReply({"data": [{"object": "embedding", "embedding": [0.1] * 1023, "index": 0}],
                         "model": "mistral-embed", "usage": {"prompt_tokens": 1, "total_tokens": 1}}))
    with pytest.raises(MistralSuiteError, match="1023-dimension vector for mistral/mistral-embed, which has 1024"):
        mistral_embed().embed("hello")


def test_wrong_number_of_vectors_is_an_error(api):
    api.queue(JSONReply({"data": [{"object": "embedding", "embedding": [0.1] * 1024, "index": 0}],
                         "model": "mistral-embed", "usage": {"prompt_tokens": 1, "total_tokens": 1}}))
    with pytest.raises(MistralSuiteError, match="returned 1 embeddings for 2 inputs"):
        list(mistral_embed().embed_multi(["one", "two"]))


def test_vectors_sorted_by_index(api):
    vectors = [list(_vector(t, 1024)) for t in ("one", "two")]
    api.queue(JSONReply({"data": [{"object": "embedding", "embedding": vectors[1], "index": 1},
                                  {"object": "embedding", "embedding": vectors[0], "index": 0}],
                         "model": "mistral-embed", "usage": {"prompt_tokens": 2, "total_tokens": 2}}))
    assert list(mistral_embed().embed_multi(["one", "two"])) == vectors


# --- base64: a fifth of the bytes, no number parsing; floats where the service will not -------------


def _answer(vectors: list) -> JSONReply:
    return JSONReply({"id": "e1", "object": "list", "model": "mistral-embed",
                      "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
                      "usage": {"prompt_tokens": 2, "total_tokens": 2}})


def test_base64_is_asked_for_and_decoded_exactly(api):
    docs = documents(700)  # several requests, decoded on worker threads
    vectors = list(codestral_256().embed_multi(docs))
    sent = within_limits(api)
    assert len(sent) > 1 and {b["encoding_format"] for b in sent} == {"base64"}
    # float32, as the service computes and llm stores them
    assert all(v == list(struct.unpack("<256f", struct.pack("<256f", *_vector(d, 256)))) for v, d in zip(vectors, docs))
    assert embeddings.FLOATS_ONLY == set()


def test_an_answer_in_floats_is_taken_as_it_is(api):
    api.queue(_answer([list(_vector("one", 1024)), list(_vector("two", 1024))]))  # encoding_format ignored
    assert list(mistral_embed().embed_multi(["one", "two"])) == [list(_vector(t, 1024)) for t in ("one", "two")]
    assert embeddings.FLOATS_ONLY == set()  # nothing wrong with asking
    mistral_embed().embed("three")
    assert bodies(api, EMBEDDINGS)[-1]["encoding_format"] == "base64"


def test_an_answer_in_base64_is_taken_when_floats_were_asked(api):
    embeddings.FLOATS_ONLY.add(api.base_url)
    api.queue(_answer([base64.b64encode(struct.pack("<1024f", *_vector("one", 1024))).decode()]))
    assert close(mistral_embed().embed("one"), _vector("one", 1024))
    assert "encoding_format" not in bodies(api, EMBEDDINGS)[0]


def test_a_service_refusing_base64_gets_floats_from_then_on(api):
    api.encoding_formats = {"float"}
    docs = documents(700)
    vectors = list(codestral_256().embed_multi(docs))
    assert all(close(v, _vector(d, 256)) for v, d in zip(vectors, docs))
    sent = bodies(api, EMBEDDINGS)
    refused = [b for b in sent if b.get("encoding_format") == "base64"]
    assert 1 <= len(refused) <= 4  # the first requests in flight, at most one per worker
    assert len(sent) == len(refused) + len(pack_batches(docs, 512, 16384))
    assert embeddings.FLOATS_ONLY == {api.base_url}
    mistral_embed().embed("later")
    assert "encoding_format" not in bodies(api, EMBEDDINGS)[-1]


@pytest.mark.parametrize("odd", [
    base64.b64encode(struct.pack("<1024e", *([0.5] * 1024))).decode(),  # float16: half the bytes
    base64.b64encode(bytes(1024)).decode(),  # int8
    "not base64 at all!",
    {"values": [0.1] * 1024},
])  # fmt: skip
def test_an_answer_in_another_encoding_is_asked_again_as_floats(api, odd):
    api.queue(_answer([odd]))
    assert close(mistral_embed().embed("hello"), _vector("hello", 1024))
    first, second = bodies(api, EMBEDDINGS)
    assert first["encoding_format"] == "base64" and "encoding_format" not in second
    assert embeddings.FLOATS_ONLY == {api.base_url}


def test_a_bad_input_is_reported_at_once_not_retried_as_floats(api):
    with pytest.raises(MistralSuiteError, match="Item 2 of 2 could not be embedded: Input id 1 has"):
        list(mistral_embed().embed_multi(["fine", "word " * 9000]))  # 9,000 words pass our check, not the fake's
    assert [b.get("encoding_format") for b in bodies(api, EMBEDDINGS)] == ["base64"]  # it names an input: not base64
    assert embeddings.FLOATS_ONLY == set()


def test_embed_multi_with_a_service_refusing_base64(fake, run_llm, user_dir, tmp_path):
    fake.encoding_formats = {"float"}
    docs = documents(300)
    path = write_csv(tmp_path / "docs.csv", [(str(i), doc) for i, doc in enumerate(docs)])
    assert_cli_ok(run_llm("embed-multi", "docs", str(path), "-m", "mistral/codestral-embed-256"))
    sent = bodies(fake, EMBEDDINGS)
    assert [b.get("encoding_format") for b in sent] == ["base64", None, None, None]  # llm's 3 batches of 100
    rows = stored(user_dir / "embeddings.db", "docs")
    assert len(rows) == 300 and all(close(rows[str(i)], _vector(docs[i], 256)) for i in (0, 150, 299))


def test_in_process_errors_number_the_items(api):
    with pytest.raises(MistralSuiteError, match=r"^Item 2 of 3 is empty"):
        list(mistral_embed().embed_multi(["a", " ", "c"]))
    with pytest.raises(MistralSuiteError, match=r"^The input is too long to embed"):
        mistral_embed().embed("word " * 60000)
    assert not bodies(api, EMBEDDINGS)


def test_embedding_models_registered():
    models = {model.model_id: (model, aliases) for model, aliases in embedding_models()}
    assert models["mistral/mistral-embed"][0].dimensions == 1024
    assert "mistral-embed" in models["mistral/mistral-embed"][1]
    for size in (256, 512, 1024, 1536, 3072):
        model, aliases = models[f"mistral/codestral-embed-{size}"]
        assert (model.dimensions, model.output_dimension) == (size, size)
        assert aliases == (("codestral-embed",) if size == 1536 else ())
    assert models["mistral/mistral-embed"][0].batch_size >= 2000  # `--batch-size` can go high


# --- end to end through the CLI -----------------------------------------------------------------------


def run_parallel(run, calls: list[tuple[tuple[str, ...], dict]]) -> list:
    """Several `llm` subprocesses at once (each a second of interpreter start-up)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: run(*call[0], **call[1]), calls))


MODELS = {  # name on the command line -> (dimensions, request body fields besides input)
    "mistral-embed": (1024, {"model": "mistral-embed", "encoding_format": "base64"}),
    **{f"mistral/codestral-embed-{size}": (size, {"model": "codestral-embed", "output_dimension": size,
                                                  "encoding_format": "base64"})
       for size in (256, 512, 1024, 1536, 3072)},
    "codestral-embed": (1536, {"model": "codestral-embed", "output_dimension": 1536, "encoding_format": "base64"}),
}


def test_embed_content_every_model(fake, run_llm):
    """`llm embed -m MODEL -c TEXT` for each model: the right vector, of the right length, from the right body."""
    results = run_parallel(run_llm, [(("embed", "-m", name, "-c", f"text for {name}"), {}) for name in MODELS])
    sent = {b["input"][0]: b for b in bodies(fake, EMBEDDINGS)}
    for (name, (size, fields)), result in zip(MODELS.items(), results):
        vector = json.loads(assert_cli_ok(result))
        assert len(vector) == size and close(vector, _vector(f"text for {name}", size)), name
        assert sent[f"text for {name}"] == {**fields, "input": [f"text for {name}"]}, name


def test_embed_multi_csv_2000_documents_then_similar(fake, run_llm, user_dir, tmp_path):
    docs = documents(2000)
    path = write_csv(tmp_path / "docs.csv", [(str(i), doc) for i, doc in enumerate(docs)])
    # 256 dimensions: the fake builds and sends a quarter of mistral-embed's floats; packing is the same.
    assert_cli_ok(run_llm("embed-multi", "docs", str(path), "-m", "mistral/codestral-embed-256",
                          "--batch-size", "2000"))
    sent = within_limits(fake)
    assert len(sent) <= 20 and fake.embedding_requests == len(sent)
    assert fake.max_concurrency_seen <= 4
    assert sorted(t for b in sent for t in b["input"]) == sorted(docs)  # every document once
    rows = stored(user_dir / "embeddings.db", "docs")
    assert len(rows) == 2000
    for i in (0, 1, 777, 1999):
        assert close(rows[str(i)], _vector(docs[i], 256))

    hits = [json.loads(line) for line in assert_cli_ok(run_llm("similar", "docs", "-c", docs[42], "-n", "3"))
            .splitlines()]
    assert hits[0]["id"] == "42" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5) and len(hits) == 3

    for name in ("embeddings.db", "embeddings.db-wal", "logs.db", "logs.db-wal"):
        if (user_dir / name).exists():
            assert SENTINEL_KEY.encode() not in (user_dir / name).read_bytes(), name


def test_embed_multi_files(fake, run_llm, user_dir, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    docs = documents(300, seed=1)
    for i, doc in enumerate(docs):
        (folder / f"note{i:03}.txt").write_text(doc)
    assert_cli_ok(run_llm("embed-multi", "notes", "--files", str(folder), "*.txt", "-m", "mistral/codestral-embed-512",
                          "--batch-size", "2000"))
    sent = within_limits(fake)
    assert len(sent) <= 3
    assert all(b["output_dimension"] == 512 for b in sent)
    rows = stored(user_dir / "embeddings.db", "notes")
    assert len(rows) == 300
    assert close(rows["note123.txt"], _vector(docs[123], 512))


def test_embed_multi_default_batch_size(fake, run_llm, user_dir, tmp_path):
    docs = documents(250, seed=2)
    path = write_csv(tmp_path / "docs.csv", [(f"d{i}", doc) for i, doc in enumerate(docs)])
    assert_cli_ok(run_llm("embed-multi", "docs", str(path), "-m", "mistral/codestral-embed-256"))
    assert [len(b["input"]) for b in within_limits(fake)] == [100, 100, 50]  # llm's own batches of 100
    assert len(stored(user_dir / "embeddings.db", "docs")) == 250


def test_rate_limited_server_still_stores_every_row(fake, run_llm, user_dir, tmp_path):
    fake.min_interval = 0.3  # a 429 (with Retry-After) for any request closer than 0.3 s to the last one let in
    docs = documents(500, seed=3)
    path = write_csv(tmp_path / "docs.csv", [(str(i), doc) for i, doc in enumerate(docs)])
    result = run_llm("embed-multi", "docs", str(path), "-m", "mistral/codestral-embed-256", "--batch-size", "2000")
    assert_cli_ok(result)
    assert fake.rate_limited >= 1  # the concurrent start did meet the limit ...
    rows = stored(user_dir / "embeddings.db", "docs")
    assert len(rows) == 500 and close(rows["499"], _vector(docs[499], 256))  # ... and nothing was lost
    packs = len(pack_batches(docs, 512, 16384))
    assert packs >= 4 and fake.embedding_requests - fake.rate_limited == packs
    assert fake.rate_limited < 2 * packs  # it learned the pace instead of hammering the server


def test_429_retry_after_then_success(api):
    api.queue(error_reply(429, "Requests rate limit exceeded", retry_after=0.3))
    start = time.monotonic()
    assert close(mistral_embed().embed("patience"), _vector("patience", 1024))
    assert api.embedding_requests == 2 and time.monotonic() - start >= 0.3


def test_5xx_retried(fake, run_llm):
    fake.queue(error_reply(503, "busy", type="internal_error"), error_reply(500, "oops", type="internal_error"),
               error_reply(502, "bad gateway", type="internal_error"))
    out = assert_cli_ok(run_llm("embed", "-m", "mistral-embed", "-c", "again"))
    assert close(json.loads(out), _vector("again", 1024)) and fake.embedding_requests == 4


def test_5xx_until_attempts_run_out(api, monkeypatch):
    monkeypatch.setenv("LLM_MISTRAL_MAX_ATTEMPTS", "2")
    api.queue(*[error_reply(503, "busy", type="internal_error")] * 2)
    with pytest.raises(MistralSuiteError, match=r"server error \(503\) after 2 attempts"):
        list(mistral_embed().embed_multi(["one", "two"]))


def test_errors_name_the_item(fake, run_llm, cli_env, tmp_path):
    over_by_server = "x " * 8500  # 8,500 tokens for the service, under our client-side threshold
    over_by_us = "word " * 12000  # refused before sending
    write_csv(tmp_path / "server.csv", [("fine-1", "hello"), ("too-long-1", over_by_server), ("fine-2", "bye")])
    write_csv(tmp_path / "empty.csv", [("fine-1", "hello"), ("blank-1", "")])
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("short")
    (files / "huge.txt").write_text(over_by_server)
    (tmp_path / "huge.txt").write_text(over_by_us)
    cases = {  # args -> what the one Error: line must contain
        ("embed-multi", "c1", str(tmp_path / "server.csv"), "-m", "mistral-embed"):
            ("Item 'too-long-1' could not be embedded", "8500 tokens", "Nothing from this batch of 3 items"),
        ("embed-multi", "c3", str(tmp_path / "empty.csv"), "-m", "mistral-embed"): ("Item 'blank-1' is empty",),
        ("embed-multi", "c4", "--files", str(files), "*.txt", "-m", "mistral-embed"):
            ("Item 'huge.txt' could not be embedded", "8500 tokens"),
        ("embed", "c5", "doc-7", "-m", "mistral-embed", "-i", str(tmp_path / "huge.txt")):
            ("Item 'doc-7' is too long", "Nothing was stored"),
        ("embed", "-m", "mistral-embed", "-c", over_by_server): ("The input could not be embedded", "8500 tokens"),
        ("embed", "-m", "mistral-embed", "-c", "   "): ("The input is empty",),
    }
    calls = []
    for n, args in enumerate(cases):
        home = tmp_path / f"user{n}"
        home.mkdir()
        calls.append((args, {"env": {**cli_env, "LLM_USER_PATH": str(home)}}))
    for (args, call), result in zip(calls, run_parallel(run_llm, calls)):
        line = assert_cli_error(result, *cases[args])
        assert SENTINEL_KEY not in result.stderr + result.stdout, line
        db = Path(call["env"]["LLM_USER_PATH"]) / "embeddings.db"
        if db.exists():  # nothing half-written
            with sqlite3.connect(db) as conn:
                assert conn.execute("select count(*) from embeddings").fetchone() == (0,), args


# --- issue 10: the rejected row is named however the service says which; text that is not UTF-8 ---------


@pytest.mark.parametrize("reply", [
    JSONReply({"detail": [{"type": "string_too_long", "loc": ["body", "input", 1], "msg": "too long"}]}, 422),
    error_reply(400, "inputs[1] is not valid"),
    error_reply(400, "Invalid input at index 1"),
    error_reply(413, "input 1 is too large"),
])  # fmt: skip
def test_the_rejected_row_is_named_in_every_shape(api, user_dir, tmp_path, reply):
    api.queue(reply)
    rows = write_csv(tmp_path / "rows.csv", [("first", "one"), ("second-row", "two"), ("third", "three")])
    collection = llm.Collection("notes", sqlite_utils.Database(user_dir / "embeddings.db"),
                                model_id="mistral/mistral-embed")
    with open(rows) as handle:
        items = [(row["id"], row["content"]) for row in csv.DictReader(handle)]
    with pytest.raises(MistralSuiteError, match=r"Item 'second-row' could not be embedded") as info:
        collection.embed_multi(items)
    assert "Nothing from this batch of 3 items was stored" in str(info.value)


def test_text_that_is_not_utf8_names_the_item(fake, cli_env, tmp_path):
    result = subprocess.run([sys.executable, "-m", "llm", "embed", "-m", "mistral-embed"], input=b"na\xefve text",
                            capture_output=True, env=cli_env, timeout=60)
    completed = subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                            result.stderr.decode("utf-8", "replace"))
    assert_cli_error(completed, "The input is not valid UTF-8", "byte 0xef after 'na'")
    assert bodies(fake, EMBEDDINGS) == []
    with pytest.raises(MistralSuiteError, match="Item 2 of 2 is not valid UTF-8"):
        list(mistral_embed().embed_batch(["fine", "bad \udcff"], key=SENTINEL_KEY))
