"""The API model catalog: aliases, capabilities, retired models, registration offline, ``llm mistral refresh``."""

from __future__ import annotations

import json
import re

import llm
import llm.cli
import pytest
from api_mock import (
    ALIASES,
    API,
    CHAT_ENTRIES,
    CHAT_URL,
    RETIRED,
    registered_models,
)
from click.testing import CliRunner
from conftest import SENTINEL_KEY, assert_cli_ok
from fake_mistral import DEFAULT_MODELS, model_card
from inprocess import invoke_llm

from _llm_mistral_suite import catalog
from _llm_mistral_suite.catalog import (
    DEPRECATED,
    GA,
    catalog_cache_path,
)
from _llm_mistral_suite.chat import AsyncMistralChat, MistralChat
from _llm_mistral_suite.errors import MissingKeyError, MistralSuiteError

# --- catalog ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias, api_name", ALIASES.items())
def test_alias_resolves_to_catalog_model(alias, api_name):
    model = llm.get_model(alias)
    assert isinstance(model, MistralChat)
    assert model.model_id == f"mistral/{api_name}"
    assert llm.get_model(f"mistral/{api_name}").model_id == model.model_id
    async_model = llm.get_async_model(alias)
    assert isinstance(async_model, AsyncMistralChat) and async_model.model_id == model.model_id


def test_catalog_capabilities_shape_the_models():
    large, voxtral, magistral, codestral = (llm.get_model(n) for n in
                                            ("mistral-large", "voxtral-small", "magistral-small", "codestral"))
    assert "image/png" in large.attachment_types and "audio/mpeg" not in large.attachment_types
    assert "audio/mpeg" in voxtral.attachment_types and "image/png" not in voxtral.attachment_types
    assert not codestral.attachment_types and "fim" in codestral.entry.capabilities
    assert "reasoning" in magistral.entry.capabilities and magistral.entry.status == DEPRECATED
    assert all(m.supports_tools and m.supports_schema and m.can_stream for m in (large, voxtral, magistral))
    # Context lengths of the lineup (reference/mistral-api.md): 256k for Large/Medium/Small, 128k for Codestral.
    assert {n: llm.get_model(n).entry.context for n in ("mistral-large", "mistral-medium", "mistral-small",
                                                        "codestral")} == {
        "mistral-large": 262144, "mistral-medium": 262144, "mistral-small": 262144, "codestral": 131072}
    # Embedding models are not chat models.
    with pytest.raises(llm.UnknownModelError):
        llm.get_model("mistral/mistral-embed")


def test_vision_models_read_pdfs():
    readers = {e.api_name for e in CHAT_ENTRIES if "application/pdf" in llm.get_model(e.model_id).attachment_types}
    assert readers == {e.api_name for e in CHAT_ENTRIES if "vision" in e.capabilities}
    assert "mistral-large-latest" in readers and "codestral-latest" not in readers
    new = catalog.entry_from_card(model_card("mistral-new-1", "completion_chat", "vision"), None)
    assert "documents" in new.capabilities
    assert "documents" not in catalog.entry_from_card(model_card("mistral-new-2", "completion_chat"), None).capabilities


@pytest.mark.parametrize("api_name", RETIRED)
def test_retired_model_is_registered_and_explains_the_route(mock, key, api_name):
    model = llm.get_model(f"mistral/{api_name}")
    entry = model.entry
    assert entry.status == catalog.RETIRED and entry.replacement
    with pytest.raises(MistralSuiteError) as info:
        model.prompt("hello").text()
    message = str(info.value)
    assert "retired" in message and entry.replacement in message
    if entry.local_route:
        assert f"llm mistral local download {entry.local_route}" in message
        assert ("llamafile" in message) == (entry.local_route not in catalog.NO_LLAMAFILE_ROUTES)
    assert mock.get_requests() == []


def test_retired_model_error_comes_before_missing_key(mock):
    with pytest.raises(MistralSuiteError, match="retired") as info:
        llm.get_model("mistral/open-mixtral-8x7b").prompt("hi").text()
    assert not isinstance(info.value, MissingKeyError)


def test_register_models_offline_with_key_and_no_cache(mock, key, user_dir):
    assert not catalog_cache_path().exists()
    models = {m.model_id: (m, a, aliases) for m, a, aliases in registered_models()}
    for entry in CHAT_ENTRIES:
        model, async_model, aliases = models[entry.model_id]
        assert isinstance(model, MistralChat) and isinstance(async_model, AsyncMistralChat)
        assert async_model.model_id == entry.model_id and aliases == entry.aliases
    assert mock.get_requests() == []  # no network, even with a key and no cache
    # `llm models` lists them, still without a request.
    result = CliRunner().invoke(llm.cli.cli, ["models"])
    assert result.exit_code == 0, result.output
    assert "mistral/mistral-large-latest" in result.output and "mistral-large" in result.output
    assert mock.get_requests() == []


@pytest.mark.parametrize("content", [
    b"\x00\xff not json",
    b'{"data": "not a list"}',
    b'["a list"]',
    b"",
])  # fmt: skip
def test_register_models_survives_a_corrupt_cache(mock, key, content):
    catalog_cache_path().write_bytes(content)
    assert {e.model_id for e in CHAT_ENTRIES} <= {m.model_id for m, _, _ in registered_models()}
    assert llm.get_model("mistral-large").model_id == "mistral/mistral-large-latest"


def test_register_models_skips_unreadable_cards(mock):
    cards = [{"no": "id"}, 5, None, {"id": "mistral-odd-1", "capabilities": "garbage"},
             model_card("mistral-good-2701", "completion_chat", "function_calling")]
    catalog_cache_path().write_text(json.dumps({"data": cards}))
    ids = {m.model_id for m, _, _ in registered_models()}
    assert "mistral/mistral-good-2701" in ids and "mistral/mistral-large-latest" in ids


def test_refresh_caches_models_payload(mock, key):
    cards = [
        *DEFAULT_MODELS,
        # A deprecation announced for a built-in model, and one already past.
        model_card("mistral-small-latest", "completion_chat", "function_calling", "vision",
                   deprecation="2999-01-31T12:00:00Z", replacement="mistral-small-2999"),
        model_card("magistral-small-latest", "completion_chat", "function_calling", "reasoning",
                   deprecation="2025-01-31T12:00:00Z", replacement="mistral-small-latest"),
    ]
    mock.add_response(url=f"{API}/models", method="GET", json={"object": "list", "data": cards})
    result = CliRunner().invoke(llm.cli.cli, ["mistral", "refresh"])
    assert result.exit_code == 0, result.output
    [request] = mock.get_requests()
    assert request.headers["authorization"] == f"Bearer {SENTINEL_KEY}"
    assert catalog_cache_path().exists()
    assert "ft:open-mistral-7b:abc123:20240101:xyz" in result.output and "mistral-new-2611" in result.output
    assert SENTINEL_KEY not in catalog_cache_path().read_text()

    fine_tuned = llm.get_model("mistral/ft:open-mistral-7b:abc123:20240101:xyz")
    assert fine_tuned.supports_tools and fine_tuned.entry.context == 32768
    assert llm.get_model("mistral/mistral-new-2611").entry.status == GA
    with pytest.raises(llm.UnknownModelError):
        llm.get_model("mistral/mistral-embed")

    small = llm.get_model("mistral-small")  # the alias survives the update
    assert small.model_id == "mistral/mistral-small-latest"
    assert (small.entry.status, small.entry.deprecation_date, small.entry.replacement) == (
        DEPRECATED, "2999-01-31", "mistral-small-2999")
    magistral = llm.get_model("magistral-small")
    assert magistral.entry.status == catalog.RETIRED
    with pytest.raises(MistralSuiteError, match="retired.*mistral-small-latest"):
        magistral.prompt("hi").text()

    listing = CliRunner().invoke(llm.cli.cli, ["mistral", "models", "--json"])
    rows = {row["id"]: row for row in json.loads(listing.output)}
    assert rows["mistral/mistral-small-latest"]["status"] == "deprecated"
    assert rows["mistral/ft:open-mistral-7b:abc123:20240101:xyz"]["capabilities"] == ["chat", "tools"]
    assert len(mock.get_requests()) == 1  # listing and lookups read the cache only


def test_404_on_a_model_with_a_known_successor_names_it(mock, key):
    mock.add_response(url=CHAT_URL, status_code=404, json={
        "object": "error", "message": "Invalid model: magistral-small-latest", "type": "invalid_model"})
    with pytest.raises(MistralSuiteError, match="no longer serves magistral-small-latest.*mistral-small-latest"):
        llm.get_model("magistral-small").prompt("hi").text()


def test_mistral_models_lists_only_ids_that_work():
    """`llm mistral models` used to list mistral/codestral-embed (no such model id) and leave out codestral-fim."""
    rows = json.loads(assert_cli_ok(invoke_llm("mistral", "models", "--json")))
    ids = [row["id"] for row in rows]
    assert "mistral/codestral-embed" not in ids
    assert [i for i in ids if i.startswith("mistral/codestral-embed")] == [
        f"mistral/codestral-embed-{size}" for size in (256, 512, 1024, 1536, 3072)]
    fim = next(row for row in rows if row["id"] == "mistral/codestral-fim")
    assert fim["aliases"] == ["codestral-fim"] and fim["capabilities"] == ["fim"]
    for row in rows:  # every id and alias shown names a model llm can use
        for name in [row["id"], *row["aliases"]]:
            if "embedding" in row["capabilities"]:
                assert llm.get_embedding_model(name).model_id == row["id"]
            else:
                assert llm.get_model(name).model_id == row["id"]
    table = assert_cli_ok(invoke_llm("mistral", "models"))
    assert "mistral/codestral-fim" in table
    assert re.search(r"^mistral/codestral-embed-1536 +codestral-embed ", table, re.MULTILINE)
