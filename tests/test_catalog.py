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
from conftest import SENTINEL_KEY, assert_cli_error, assert_cli_ok
from fake_mistral import DEFAULT_MODELS, chat_completion, model_card
from inprocess import invoke_llm

from _llm_mistral_suite import catalog
from _llm_mistral_suite.catalog import (
    DEPRECATED,
    GA,
    catalog_cache_path,
)
from _llm_mistral_suite.chat import AsyncMistralChat, MistralChat
from _llm_mistral_suite.errors import MissingKeyError, MistralSuiteError
from _llm_mistral_suite.routes import NO_LLAMAFILE_ROUTES

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
        assert ("llamafile" in message) == (entry.local_route not in NO_LLAMAFILE_ROUTES)
    assert mock.get_requests() == []


@pytest.mark.parametrize("name", ["pixtral-12b", "mistral/pixtral-12b"])
def test_retired_pixtral_names_its_local_route(mock, key, name):
    """Pixtral 12B left the API but `llm mistral local download` has its GGUF and projector: the error says so."""
    with pytest.raises(MistralSuiteError) as info:
        llm.get_model(name).prompt("hi").text()
    message = str(info.value)
    assert "ministral-14b-latest" in message and "llm mistral local download pixtral-12b" in message
    assert "llamafile" not in message  # `llm -m llamafile` sends no images
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


@pytest.mark.parametrize("reasoning_flag", ["absent", False])
def test_refreshed_cards_keep_built_in_capabilities(mock, key, reasoning_flag):
    """A card that says nothing about reasoning (or denies it) does not take the built-in capability away;
    a dated version of a built-in model gets its family's; a card adds what it claims."""
    def card(id: str, *caps: str, **extra) -> dict:
        made = model_card(id, *caps, **extra)
        if reasoning_flag == "absent":
            del made["capabilities"]["reasoning"]
        return made

    cards = [
        card("magistral-medium-latest", "completion_chat", "function_calling", aliases=("magistral-medium-2509",)),
        card("magistral-medium-2509", "completion_chat", "function_calling", "vision",
             aliases=("magistral-medium-latest",)),
        card("magistral-small-2507", "completion_chat"),  # no alias: its name says what it is a version of
        card("mistral-large-latest", "completion_chat"),  # silent on tools and vision
        card("mistral-ocr-2512", "ocr"),  # not a chat model
        card("mistral-small-2506", "completion_chat", "function_calling"),  # before Small learnt to reason
        card("mistral-medium-2508", "completion_chat", "function_calling", "reasoning"),  # says it reasons
    ]
    mock.add_response(url=f"{API}/models", method="GET", json={"object": "list", "data": cards})
    assert CliRunner().invoke(llm.cli.cli, ["mistral", "refresh"]).exit_code == 0
    for name in ("magistral-medium", "mistral/magistral-medium-2509", "mistral/magistral-small-2507"):
        for model in (llm.get_model(name), llm.get_async_model(name)):
            assert "reasoning" in model.entry.capabilities, name
            assert model.Options(reasoning_effort="high").reasoning_effort == "high"
    assert "vision" in llm.get_model("mistral/magistral-medium-2509").entry.capabilities  # the card adds it
    old_small = llm.get_model("mistral/mistral-small-2506")
    expected = reasoning_flag == "absent"  # silent: it is a Mistral Small; denied: the card knows better
    assert ("reasoning_effort" in old_small.Options.model_fields) is expected
    assert ("reasoning" in old_small.entry.capabilities) is expected
    assert "reasoning_effort" in llm.get_model("mistral/mistral-medium-2508").Options.model_fields
    large = llm.get_model("mistral-large")
    assert {"tools", "vision"} <= large.entry.capabilities and "reasoning_effort" not in large.Options.model_fields
    with pytest.raises(llm.UnknownModelError):
        llm.get_model("mistral/mistral-ocr-2512")
    mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
    assert llm.get_model("magistral-medium").prompt("hi", reasoning_effort="low", stream=False).text() == "ok"
    assert json.loads(mock.get_requests()[-1].content)["reasoning_effort"] == "low"


def test_404_on_a_model_with_a_known_successor_names_it(mock, key):
    mock.add_response(url=CHAT_URL, status_code=404, json={
        "object": "error", "message": "Invalid model: magistral-small-latest", "type": "invalid_model"})
    with pytest.raises(MistralSuiteError, match="no longer serves magistral-small-latest.*mistral-small-latest"):
        llm.get_model("magistral-small").prompt("hi").text()


# --- every id llm-mistral registered resolves (switching users' logs.db and muscle memory) ---------------

# The model ids and aliases of llm-mistral's DEFAULT_ALIASES across its releases (0.2 to 0.16).
LLM_MISTRAL_IDS = {
    "mistral/mistral-tiny": "mistral-tiny", "mistral/mistral-small": None, "mistral/mistral-medium": None,
    "mistral/open-mistral-nemo": "mistral-nemo", "mistral/mistral-small-2312": "mistral-small-2312",
    "mistral/mistral-small-2402": "mistral-small-2402", "mistral/mistral-small-2409": "mistral-small-2409",
    "mistral/mistral-small-2501": "mistral-small-2501", "mistral/magistral-small-2506": "magistral-small-2506",
    "mistral/magistral-small-latest": "magistral-small", "mistral/mistral-small-latest": "mistral-small",
    "mistral/mistral-medium-2312": "mistral-medium-2312", "mistral/mistral-medium-2505": "mistral-medium-2505",
    "mistral/magistral-medium-2506": "magistral-medium-2506", "mistral/magistral-medium-latest": "magistral-medium",
    "mistral/mistral-medium-latest": "mistral-medium", "mistral/mistral-large-latest": "mistral-large",
    "mistral/codestral-mamba-latest": "codestral-mamba", "mistral/codestral-latest": "codestral",
    "mistral/ministral-3b-latest": "ministral-3b", "mistral/ministral-8b-latest": "ministral-8b",
    "mistral/pixtral-12b-latest": "pixtral-12b", "mistral/pixtral-12b": None,
    "mistral/pixtral-large-latest": "pixtral-large", "mistral/devstral-small-latest": "devstral-small",
    "mistral/voxtral-mini-2507": None, "mistral/voxtral-small-2507": None,  # their aliases now name -latest
}  # fmt: skip


@pytest.mark.parametrize("model_id", LLM_MISTRAL_IDS)
def test_every_llm_mistral_id_resolves(mock, key, model_id):
    for get_model in (llm.get_model, llm.get_async_model):
        model = get_model(model_id)
        assert model.model_id == model_id and isinstance(model, (MistralChat, AsyncMistralChat))
        if LLM_MISTRAL_IDS[model_id]:
            assert get_model(LLM_MISTRAL_IDS[model_id]).model_id == model_id
    entry = llm.get_model(model_id).entry
    if entry.status == catalog.RETIRED:  # the retired-model guidance, before any request
        with pytest.raises(MistralSuiteError, match=f"retired.*{entry.replacement}"):
            llm.get_model(model_id).prompt("hi").text()
        assert mock.get_requests() == []
    else:  # sent under its own name; a 404 names the successor
        mock.add_response(url=CHAT_URL, json=chat_completion("ok"))
        assert llm.get_model(model_id).prompt("hi", stream=False).text() == "ok"
        assert json.loads(mock.get_requests()[-1].content)["model"] == entry.api_name
        if entry.status == DEPRECATED:
            mock.add_response(url=CHAT_URL, status_code=404, json={"object": "error", "type": "invalid_model",
                                                                   "message": f"Invalid model: {entry.api_name}"})
            with pytest.raises(MistralSuiteError, match=f"no longer serves {entry.api_name}.*{entry.replacement}"):
                llm.get_model(model_id).prompt("hi", stream=False).text()


def test_magistral_2506_ids_are_reasoning_models():
    for name in ("magistral-small-2506", "magistral-medium-2506"):
        assert "reasoning_effort" in llm.get_model(name).Options.model_fields


def _llm_mistral_cache(*cards: dict) -> None:
    """llm-mistral's cache: GET /v1/models as it saved it."""
    (llm.user_dir() / "mistral_models.json").write_text(json.dumps({"object": "list", "data": list(cards)}, indent=2))


def test_llm_mistral_cache_adds_the_ids_it_listed(mock, key):
    _llm_mistral_cache(
        model_card("mistral-large-2411", "completion_chat", "function_calling", aliases=("mistral-large-latest",)),
        model_card("open-mixtral-8x22b-2404", "completion_chat", "function_calling"),
        model_card("magistral-medium-2507", "completion_chat", "function_calling"),  # says nothing of reasoning
        model_card("codestral-2405", "completion_chat", "completion_fim", deprecation="2025-01-01",
                   replacement="codestral-latest"),
        model_card("mistral-ocr-2505", "ocr"),
        # Old cards of models the catalog knows do not change them (the built-in catalog is newer).
        model_card("mistral-large-latest", "completion_chat", max_context_length=32768),
        model_card("open-mistral-7b", "completion_chat", "function_calling"),
    )
    ids = {m.model_id for m, _, _ in registered_models()}
    assert {"mistral/mistral-large-2411", "mistral/open-mixtral-8x22b-2404", "mistral/codestral-2405"} <= ids
    assert "mistral/mistral-ocr-2505" not in ids  # not a chat model
    assert llm.get_model("mistral/mistral-large-2411").supports_tools
    assert "vision" in llm.get_model("mistral/mistral-large-2411").entry.capabilities  # its family's
    assert "reasoning_effort" in llm.get_model("mistral/magistral-medium-2507").Options.model_fields
    assert llm.get_model("mistral-large").entry.context == 262144
    assert llm.get_model("mistral/open-mistral-7b").entry.status == catalog.RETIRED
    with pytest.raises(MistralSuiteError, match="retired.*codestral-latest"):
        llm.get_model("mistral/codestral-2405").prompt("hi").text()
    # Our own refresh cache is the service's current word: it overrides llm-mistral's old cards.
    catalog_cache_path().write_text(json.dumps({"data": [
        model_card("mistral-large-2411", "completion_chat", deprecation="2026-05-31", replacement="mistral-large-2512")]}))
    assert llm.get_model("mistral/mistral-large-2411").entry.status == catalog.RETIRED
    assert mock.get_requests() == []


@pytest.mark.parametrize("content", [b"\x00\xff not json", b'{"data": "not a list"}', b'[1]', b""])
def test_a_damaged_llm_mistral_cache_is_ignored(content):
    (llm.user_dir() / "mistral_models.json").write_bytes(content)
    assert {e.model_id for e in CHAT_ENTRIES} <= {m.model_id for m, _, _ in registered_models()}


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


def test_names_in_use_refuses_when_llm_cannot_list_its_models(monkeypatch):
    """It used to return {} (another plugin failing to register), so `servers add` took any name or alias."""

    def failing_plugin():
        raise RuntimeError("another plugin broke")

    monkeypatch.setattr(llm, "get_models_with_aliases", failing_plugin)
    with pytest.raises(MistralSuiteError, match=r"listing llm's models failed \(RuntimeError: another plugin broke\)"):
        catalog.names_in_use()
    result = invoke_llm("mistral", "servers", "add", "box", "http://127.0.0.1:9/v1", "--alias", "mistral-small")
    assert_cli_error(result, "Cannot check that no other model already has this name", "another plugin broke")
    assert not (llm.user_dir() / "mistral-suite-servers.json").exists()
