"""Adding providers from the catalog (service level) and catalog_sync: what it changes and what it keeps.

"The catalog moved on" is set up the way it happens in real life: the database holds what an older
catalog wrote (field value and its record in ``catalog_values`` agree), while an admin edit is a field
that differs from that record.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.forms.models import model_to_dict

from providers.catalog import CatalogError, catalog_provider
from providers.models import ChainEntry, FallbackChain, Provider, ProviderKey, UpstreamModel
from providers.services_catalog import AUTO_CHAIN, catalog_sync, insert_index, provider_add_from_catalog

pytestmark = pytest.mark.django_db


def _add(slug: str, keys: list[str] | None = None, **kwargs):
    return provider_add_from_catalog(
        slug=slug, keys=keys if keys is not None else [f"{slug}-secret-1"], test_keys=False, **kwargs
    )


def _auto_routes() -> list[str]:
    chain = FallbackChain.objects.get(name=AUTO_CHAIN)
    return [e.model.route_name for e in chain.entries.select_related("model__provider").order_by("position")]


def _snapshot() -> list[dict]:
    rows = []
    for model in (Provider, ProviderKey, UpstreamModel, FallbackChain, ChainEntry):
        for obj in model.objects.order_by("pk"):
            data = model_to_dict(obj)
            data.pop("secret", None)
            rows.append({"model": model.__name__, "pk": obj.pk, **data})
    rows.extend({"secret_of": key.pk, "value": key.secret} for key in ProviderKey.objects.order_by("pk"))
    return rows


def test_add_creates_provider_models_limits_keys_and_ranked_auto_chain():
    result = _add("groq", keys=["gsk_first_key_0001", " gsk_first_key_0001 ", "", "gsk_second_key_0002"])
    entry = catalog_provider("groq")
    provider = Provider.objects.get(slug="groq")
    assert (
        result.created and provider.base_url == entry.base_url and provider.drop_params == entry.drop_params
    )
    assert provider.catalog_values["base_url"] == entry.base_url
    llama = provider.models.get(model_id="llama-3.3-70b-versatile")
    assert (llama.rpm, llama.rpd, llama.tpm, llama.tpd) == (30, 1000, 12000, 100000)
    assert llama.supports_tools and llama.context_window == 131072
    assert provider.models.get(model_id="whisper-large-v3-turbo").kind == "transcription"
    # Duplicates and blanks are ignored; secrets are stored, never echoed.
    assert sorted(provider.keys.values_list("label", "secret")) == [
        ("groq-1", "gsk_first_key_0001"),
        ("groq-2", "gsk_second_key_0002"),
    ]
    assert [k.masked for k in result.keys] == ["…0001", "…0002"]
    ranked = sorted((m for m in entry.models if m.auto_rank is not None), key=lambda m: m.auto_rank)
    assert _auto_routes() == [f"groq/{m.id}" for m in ranked]

    # A second provider interleaves by rank: cerebras/gpt-oss-120b (12) goes between groq's 10 and 18.
    _add("cerebras")
    routes = _auto_routes()
    assert routes[:3] == ["groq/openai/gpt-oss-120b", "cerebras/gpt-oss-120b", "groq/llama-3.3-70b-versatile"]
    positions = list(
        FallbackChain.objects.get(name=AUTO_CHAIN)
        .entries.order_by("position")
        .values_list("position", flat=True)
    )
    assert positions == list(range(len(routes)))


def test_hand_placed_chain_entries_keep_their_place():
    _add("cerebras")
    hand = Provider.objects.create(slug="local", name="local", base_url="http://127.0.0.1:1/v1")
    mine = UpstreamModel.objects.create(provider=hand, model_id="my-model")
    chain = FallbackChain.objects.get(name=AUTO_CHAIN)
    ChainEntry.objects.create(chain=chain, model=mine, position=0)
    ChainEntry.objects.filter(chain=chain, model__provider__slug="cerebras").update(position=1)
    _add("groq")
    routes = _auto_routes()
    # The unranked hand-placed entry stays first; rank 10 still goes before rank 12.
    assert routes[:3] == ["local/my-model", "groq/openai/gpt-oss-120b", "cerebras/gpt-oss-120b"]
    assert insert_index([None, 12, None, 30], 20) == 3 and insert_index([5], None) == 1


def test_embedding_models_get_one_chain_per_family():
    _add("cloudflare", keys=["acc123:cf-token-abcd"])
    _add("siliconflow")
    chain = FallbackChain.objects.get(name="bge-m3")
    assert chain.kind == "embedding"
    members = list(chain.entries.order_by("position").values_list("model__provider__slug", "model__family"))
    assert members == [("cloudflare", "bge-m3"), ("siliconflow", "bge-m3")]
    assert FallbackChain.objects.get(name="bge-base-en-v1.5").entries.count() == 1
    # Image and audio models join no chain; chat models without a rank stay out of auto.
    assert not ChainEntry.objects.filter(model__kind__in=["image", "transcription"]).exists()
    assert "cloudflare/@cf/meta/llama-3.1-8b-instruct-fast" not in _auto_routes()


def test_add_refuses_bad_input_and_writes_nothing():
    with pytest.raises(CatalogError, match="needs an API key"):
        _add("groq", keys=["  ", ""])
    with pytest.raises(CatalogError, match="account_id"):
        _add("cloudflare", keys=["token-without-account"])
    with pytest.raises(CatalogError, match="no provider"):
        _add("nosuch")
    assert not Provider.objects.exists() and not FallbackChain.objects.exists()


def test_keyless_provider_gets_an_anonymous_route():
    result = _add("pollinations", keys=[])
    key = ProviderKey.objects.get(provider__slug="pollinations")
    assert key.label == "anonymous" and key.secret == "" and result.keys[0].created
    assert "pollinations/openai" in _auto_routes()
    # Adding it again does not duplicate the anonymous key.
    _add("pollinations", keys=[])
    assert ProviderKey.objects.filter(provider__slug="pollinations").count() == 1


def _older_catalog_state():
    """groq as an older catalog plus some admin edits would have left it."""
    provider = Provider.objects.get(slug="groq")
    values = provider.catalog_values
    # Older catalog: llama had rpd 500; gpt-oss-20b did not exist yet.
    llama = provider.models.get(model_id="llama-3.3-70b-versatile")
    llama.rpd = 500
    llama.catalog_values = {**llama.catalog_values, "rpd": 500}
    llama.save()
    provider.models.filter(model_id="openai/gpt-oss-20b").delete()
    values["model_ids"] = [m for m in values["model_ids"] if m != "openai/gpt-oss-20b"]
    # Older catalog wrote qwen tpm 5000; the admin then set 1234 on purpose.
    qwen = provider.models.get(model_id="qwen/qwen3-32b")
    qwen.tpm = 1234
    qwen.catalog_values = {**qwen.catalog_values, "tpm": 5000}
    qwen.save()
    # Older catalog listed a model that is gone now.
    UpstreamModel.objects.create(
        provider=provider,
        model_id="gemma2-9b-it",
        rpd=14400,
        catalog_values={
            "kind": "chat",
            "family": "gemma-2",
            "dimensions": None,
            "context_window": 8192,
            "supports_tools": False,
            "supports_vision": False,
            "supports_json": False,
            "rpm": None,
            "rpd": 14400,
            "tpm": None,
            "tpd": None,
            "enabled": True,
            "auto_rank": None,
        },
    )
    values["model_ids"].append("gemma2-9b-it")
    # Admin edits: base_url pointed at a proxy, a catalog model deleted, a model disabled.
    provider.base_url = "https://proxy.internal/groq/v1"
    provider.catalog_values = values
    provider.save()
    provider.models.filter(model_id="meta-llama/llama-4-scout-17b-16e-instruct").delete()
    provider.models.filter(model_id="llama-3.1-8b-instant").update(enabled=False)


def test_dry_run_shows_changes_and_writes_nothing():
    _add("groq", keys=["gsk_key_one_1111"])
    _older_catalog_state()
    before = _snapshot()
    changes = catalog_sync(apply=False)
    assert _snapshot() == before
    lines = [str(c) for c in changes]
    assert "~ groq: model llama-3.3-70b-versatile: rpd: 500 → 1000" in lines
    assert any(line.startswith("+ groq: model openai/gpt-oss-20b") for line in lines)
    assert "- groq: model gemma2-9b-it: no longer in the catalog: disabled" in lines
    assert "= groq: model qwen/qwen3-32b: tpm: kept 1234 (catalog: 6000)" in lines
    out = io.StringIO()
    call_command("catalog_sync", stdout=out, stderr=io.StringIO())
    assert "llama-3.3-70b-versatile: rpd: 500 → 1000" in out.getvalue() and "--apply" in out.getvalue()
    assert _snapshot() == before


def test_apply_updates_the_catalogs_fields_and_keeps_keys_and_admin_edits():
    _add("groq", keys=["gsk_key_one_1111"])
    key = ProviderKey.objects.get(provider__slug="groq")
    key.status, key.status_detail, key.enabled = ProviderKey.Status.ACTIVE, "OK", False
    key.save()
    _older_catalog_state()
    out = io.StringIO()
    call_command("catalog_sync", "--apply", stdout=out, stderr=io.StringIO())
    assert "applied" in out.getvalue()

    provider = Provider.objects.get(slug="groq")
    models = {m.model_id: m for m in provider.models.all()}
    assert models["llama-3.3-70b-versatile"].rpd == 1000  # the catalog's field: updated
    assert models["qwen/qwen3-32b"].tpm == 1234  # the admin's edit: kept
    assert provider.base_url == "https://proxy.internal/groq/v1"
    assert "meta-llama/llama-4-scout-17b-16e-instruct" not in models  # deleted on purpose: stays deleted
    assert models["llama-3.1-8b-instant"].enabled is False  # disabled on purpose: stays disabled
    assert models["gemma2-9b-it"].enabled is False  # retired by the catalog: disabled, not deleted
    assert models["openai/gpt-oss-20b"].tpd == 200000  # new in the catalog: created ...
    routes = _auto_routes()  # ... and placed by rank (36): after qwen3-32b (26), before llama-3.1-8b (60)
    assert routes.index("groq/qwen/qwen3-32b") < routes.index("groq/openai/gpt-oss-20b")
    assert routes.index("groq/openai/gpt-oss-20b") < routes.index("groq/llama-3.1-8b-instant")
    key.refresh_from_db()
    assert (key.label, key.secret, key.status, key.status_detail, key.enabled) == (
        "groq-1",
        "gsk_key_one_1111",
        "active",
        "OK",
        False,
    )
    assert ProviderKey.objects.count() == 1

    # Nothing left to do; a second run changes nothing.
    before = _snapshot()
    assert [c for c in catalog_sync(apply=True) if c.action != "kept"] == []
    assert _snapshot() == before


def test_sync_ignores_providers_not_added_from_the_catalog():
    Provider.objects.create(slug="groq", name="my groq", base_url="https://example.com/v1")
    assert catalog_sync(apply=True) == []
    assert Provider.objects.get(slug="groq").name == "my groq"
    with pytest.raises(CatalogError, match="not in the catalog"):
        catalog_sync(slugs=["nosuch"])
