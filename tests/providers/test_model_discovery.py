"""Model discovery: each wire's model list read by its adapter (through the emulator, over real HTTP),
compared with the database (new / gone / changed), applied only when asked (never into a chain), from
the command line (catalog_sync --discover) and the admin's "Discover models" button."""

from __future__ import annotations

import io

import httpx
import pytest
from django.core.management import CommandError, call_command

from providers.adapters import get_adapter
from providers.adapters.base import Target
from providers.models import FallbackChain, Provider, ProviderKey, UpstreamModel
from providers.services_catalog import provider_add_from_catalog
from providers.services_discovery import provider_models_apply, provider_models_discover
from tests.adapter_helpers import TIMEOUTS

OPENROUTER_LIKE = [
    {"id": "echo-small", "context_length": 65536, "architecture": {"input_modalities": ["text", "image"]},
     "supported_parameters": ["tools", "response_format", "temperature"]},
    {"id": "plain-model"},
    {"id": "embed-large", "type": "embedding"},
]  # fmt: skip


async def _list(adapter: str, base_url: str, key: str):
    async with httpx.AsyncClient() as client:
        return await get_adapter(adapter).list_models(client, Target("p", base_url, "", key), TIMEOUTS)


async def test_openai_compatible_list_with_extras(emulator):
    emulator.engine.models["groq"] = OPENROUTER_LIKE
    models = {m.id: m for m in await _list("openai", emulator.base_url("groq"), "k")}
    small = models["echo-small"]
    assert (small.context_window, small.supports_vision, small.supports_tools, small.supports_json) == (65536, True, True, True)
    plain = models["plain-model"]
    assert (plain.kind, plain.context_window, plain.supports_tools, plain.supports_vision) == (None, None, None, None)
    assert models["embed-large"].kind == "embedding"
    [call] = emulator.calls_for(provider="groq")
    assert call.method == "GET" and call.path == "/groq/v1/models" and call.headers["authorization"] == "Bearer k"


async def test_gemini_models_list(emulator):
    emulator.engine.models["gemini"] = [
        {"id": "gemini-2.5-flash", "inputTokenLimit": 1048576, "supportedGenerationMethods": ["generateContent"]},
        {"id": "gemini-embedding-001", "supportedGenerationMethods": ["embedContent"]},
        {"id": "imagen", "supportedGenerationMethods": ["predict"]},
    ]
    models = await _list("gemini", emulator.base_url("gemini", "v1beta"), "gem-key")
    assert [(m.id, m.kind, m.context_window) for m in models] == [
        ("gemini-2.5-flash", "chat", 1048576), ("gemini-embedding-001", "embedding", None)
    ]
    [call] = emulator.calls_for(provider="gemini")
    assert call.path == "/gemini/v1beta/models" and call.headers["x-goog-api-key"] == "gem-key"


async def test_cohere_models_list_lives_under_v1(emulator):
    emulator.engine.models["cohere"] = [
        {"id": "command-a-03-2025", "endpoints": ["chat"], "context_length": 256000, "features": ["tools", "json_mode"]},
        {"id": "embed-v4.0", "endpoints": ["embed"]},
        {"id": "rerank-v3.5", "endpoints": ["rerank"]},
    ]
    models = await _list("cohere", emulator.base_url("cohere", "v2"), "co-key")
    assert [(m.id, m.kind, m.context_window, m.supports_tools, m.supports_json) for m in models] == [
        ("command-a-03-2025", "chat", 256000, True, True), ("embed-v4.0", "embedding", None, None, None)
    ]
    [call] = emulator.calls_for(provider="cohere")
    assert call.path == "/cohere/v1/models"


async def test_cloudflare_models_search(emulator):
    emulator.engine.models["cloudflare"] = [
        {"name": "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
         "properties": [{"property_id": "context_window", "value": "24000"},
                        {"property_id": "function_calling", "value": "true"}]},
        "@cf/baai/bge-m3",
    ]  # fmt: skip
    models = await _list("cloudflare", emulator.base_url("cloudflare", "client/v4"), "acct123:cf-token")
    assert [(m.id, m.kind, m.context_window, m.supports_tools) for m in models] == [
        ("@cf/meta/llama-3.3-70b-instruct-fp8-fast", "chat", 24000, True), ("@cf/baai/bge-m3", "embedding", None, None)
    ]
    [call] = emulator.calls_for(provider="cloudflare")
    assert call.path == "/cloudflare/client/v4/accounts/acct123/ai/models/search"
    assert call.headers["authorization"] == "Bearer cf-token"


@pytest.fixture
def groq(db, emulator) -> Provider:
    provider_add_from_catalog(slug="groq", keys=["groq-live-1"], base_url=emulator.base_url("groq"), test_keys=False)
    return Provider.objects.get(slug="groq")


@pytest.mark.django_db
def test_discovery_compares_with_the_database_and_writes_nothing(groq, emulator):
    emulator.engine.models["groq"] = [
        {"id": "openai/gpt-oss-120b", "context_window": 65536},  # stored as 131072
        {"id": "llama-3.1-8b-instant", "context_window": 131072},  # the same
        {"id": "brand-new-model", "context_window": 32768, "supported_parameters": ["tools"]},
    ]
    before = UpstreamModel.objects.count()
    result = provider_models_discover(provider=groq)

    assert result.ok, result.detail
    assert [m.id for m in result.new] == ["brand-new-model"]
    assert [str(c) for c in result.changed["openai/gpt-oss-120b"]] == ["context_window: 131072 → 65536"]
    assert "llama-3.1-8b-instant" not in result.changed and "llama-3.1-8b-instant" not in result.gone
    assert "whisper-large-v3" in result.gone
    assert UpstreamModel.objects.count() == before
    [call] = emulator.calls_for(provider="groq", path="/models")
    assert call.key == "groq-live-1"


@pytest.mark.django_db
def test_apply_adds_new_models_outside_every_chain_and_updates_stated_capabilities(groq, emulator):
    emulator.engine.models["groq"] = [
        {"id": "openai/gpt-oss-120b", "context_window": 65536},
        {"id": "brand-new-model", "context_window": 32768, "supported_parameters": ["tools"]},
        {"id": "other-new"},
    ]
    chains_before = {c.name: c.entries.count() for c in FallbackChain.objects.all()}
    report = provider_models_apply(result=provider_models_discover(provider=groq), add=["brand-new-model"])

    assert report.added == ["brand-new-model"] and report.updated == ["openai/gpt-oss-120b"]
    added = UpstreamModel.objects.get(provider=groq, model_id="brand-new-model")
    assert (added.kind, added.context_window, added.supports_tools, added.enabled) == ("chat", 32768, True, True)
    assert not UpstreamModel.objects.filter(model_id="other-new").exists()
    assert UpstreamModel.objects.get(provider=groq, model_id="openai/gpt-oss-120b").context_window == 65536
    assert not added.chain_entries.exists()
    assert {c.name: c.entries.count() for c in FallbackChain.objects.all()} == chains_before


@pytest.mark.django_db
def test_a_refused_key_says_why_without_the_secret(db, emulator):
    provider_add_from_catalog(slug="groq", keys=["wrong-key-9876;401"], base_url=emulator.base_url("groq"), test_keys=False)
    result = provider_models_discover(provider=Provider.objects.get(slug="groq"))
    assert not result.ok
    assert result.detail.startswith("the provider refused key groq-1 (401)")
    assert "wrong-key-9876" not in result.detail


@pytest.mark.django_db
def test_an_unreachable_provider_and_one_without_keys_say_why(db, emulator):
    provider_add_from_catalog(slug="groq", keys=["k"], base_url="http://127.0.0.1:9/v1", test_keys=False)
    assert "could not connect" in provider_models_discover(provider=Provider.objects.get(slug="groq")).detail
    ProviderKey.objects.all().delete()
    assert "no usable key" in provider_models_discover(provider=Provider.objects.get(slug="groq")).detail


@pytest.mark.django_db
def test_command_discover_shows_then_applies(groq, emulator):
    emulator.engine.models["groq"] = [{"id": "brand-new-model"}, {"id": "llama-3.1-8b-instant"}]
    out = io.StringIO()
    call_command("catalog_sync", "--discover", "groq", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "+ groq: model brand-new-model: new (kind not stated)" in text
    assert "- groq: model openai/gpt-oss-120b: no longer listed by the provider" in text
    assert "run with --apply" in text
    assert not UpstreamModel.objects.filter(model_id="brand-new-model").exists()

    out = io.StringIO()
    call_command("catalog_sync", "--discover", "groq", "--apply", stdout=out, stderr=io.StringIO())
    assert "groq: added 1 model(s)" in out.getvalue()
    assert UpstreamModel.objects.filter(provider=groq, model_id="brand-new-model").exists()


@pytest.mark.django_db
def test_command_discover_fails_loudly_for_a_refused_key_and_an_unknown_provider(db, emulator):
    provider_add_from_catalog(slug="groq", keys=["nope;403"], base_url=emulator.base_url("groq"), test_keys=False)
    err = io.StringIO()
    with pytest.raises(CommandError, match="discovery failed for 1 provider"):
        call_command("catalog_sync", "--discover", "groq", stdout=io.StringIO(), stderr=err)
    assert "refused key groq-1 (403)" in err.getvalue()
    with pytest.raises(CommandError, match="no such provider: nowhere"):
        call_command("catalog_sync", "--discover", "nowhere")


@pytest.mark.django_db
def test_catalog_sync_without_discover_keeps_its_behaviour(groq):
    out = io.StringIO()
    call_command("catalog_sync", stdout=out, stderr=io.StringIO())
    assert "up to date with the catalog" in out.getvalue()


@pytest.fixture
def staff_client(client, team):
    client.force_login(team.staff)
    return client


@pytest.mark.django_db
def test_admin_discover_button_lists_and_adds_with_one_click(staff_client, groq, emulator):
    emulator.engine.models["groq"] = [{"id": "brand-new-model", "context_window": 4096}, {"id": "openai/gpt-oss-120b"}]
    url = f"/admin/providers/provider/{groq.pk}/discover-models/"
    change_page = staff_client.get(f"/admin/providers/provider/{groq.pk}/change/").content.decode()
    assert f'action="{url}"' in change_page and "Discover models" in change_page
    assert staff_client.get(url).status_code == 403  # an upstream call: POST only

    page = staff_client.post(url).content.decode()
    assert 'id="new-models"' in page and 'value="brand-new-model"' in page and "4096" in page
    assert "groq-live-1" not in page

    response = staff_client.post(url, {"action": "apply", "add": ["brand-new-model"]})
    assert response.status_code == 302
    assert UpstreamModel.objects.get(provider=groq, model_id="brand-new-model").context_window == 4096


@pytest.mark.django_db
def test_admin_discover_shows_why_it_failed(staff_client, db, emulator):
    provider_add_from_catalog(slug="groq", keys=["secret-bad-key;401"], base_url=emulator.base_url("groq"), test_keys=False)
    provider = Provider.objects.get(slug="groq")
    page = staff_client.post(f"/admin/providers/provider/{provider.pk}/discover-models/").content.decode()
    assert 'id="discovery-error"' in page and "refused key groq-1 (401)" in page
    assert "secret-bad-key" not in page


@pytest.mark.django_db
def test_members_cannot_discover(client, team, groq):
    client.force_login(team.alice)
    assert client.post(f"/admin/providers/provider/{groq.pk}/discover-models/").status_code in (302, 403)
