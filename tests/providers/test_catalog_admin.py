"""Adding a provider from the catalog in the admin: keys tested with a real call to the emulator, models,
limits and chain placement shown, and a chat request for `auto` routed through what was added."""

from __future__ import annotations

import pytest
from django.urls import reverse

from providers.models import FallbackChain, Provider, ProviderKey
from providers.services_catalog import AUTO_CHAIN

ADD_URL = "/admin/providers/provider/add-from-catalog/"


def _auto_routes() -> list[str]:
    chain = FallbackChain.objects.get(name=AUTO_CHAIN)
    return [e.model.route_name for e in chain.entries.select_related("model__provider").order_by("position")]


@pytest.fixture
def staff_client(client, team):
    client.force_login(team.staff)
    return client


@pytest.mark.django_db
def test_changelist_links_to_add_from_catalog(staff_client):
    assert reverse("admin:providers_provider_add_from_catalog") == ADD_URL
    page = staff_client.get("/admin/providers/provider/").content.decode()
    assert f'href="{ADD_URL}"' in page and "Add from catalog" in page
    form = staff_client.get(ADD_URL).content.decode()
    assert 'value="groq"' in form and 'value="pollinations"' in form and "Cloudflare Workers AI" in form


@pytest.mark.django_db
def test_members_cannot_add_from_catalog(client, team):
    client.force_login(team.alice)
    assert client.get(ADD_URL).status_code == 403
    assert client.post(ADD_URL, {"provider": "groq", "keys": "k-alice-0001"}).status_code == 403
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_add_groq_from_catalog_tests_keys_against_the_emulator(staff_client, emulator):
    response = staff_client.post(
        ADD_URL,
        {
            "provider": "groq",
            "keys": "good-key-0001\nbad-key-0002;401\n",
            "base_url": f"{emulator.url}/groq/v1",
        },
    )
    assert response.status_code == 200
    html = response.content.decode()

    # Each key was checked with one real call that reached the emulator with that key.
    calls = emulator.calls_for(provider="groq")
    assert sorted(c.key for c in calls) == ["bad-key-0002;401", "good-key-0001"]
    assert all(c.path.endswith("/chat/completions") for c in calls)
    keys = {k.label: k for k in ProviderKey.objects.filter(provider__slug="groq")}
    assert keys["groq-1"].status == ProviderKey.Status.ACTIVE
    assert keys["groq-2"].status == ProviderKey.Status.INVALID
    assert html.count('class="key-ok"') == 1 and html.count('class="key-rejected"') == 1
    # Secrets never come back in the page (the form's key box is empty again).
    assert "good-key-0001" not in html and "bad-key-0002" not in html
    assert "…0001" in html

    # Models with their limits, and the ranked auto chain, exist and are shown.
    provider = Provider.objects.get(slug="groq")
    assert provider.base_url == f"{emulator.url}/groq/v1"
    llama = provider.models.get(model_id="llama-3.3-70b-versatile")
    assert (llama.rpm, llama.rpd, llama.tpm, llama.tpd) == (30, 1000, 12000, 100000)
    assert "llama-3.3-70b-versatile" in html and "12000" in html
    routes = _auto_routes()
    assert routes[0] == "groq/openai/gpt-oss-120b" and "groq/llama-3.3-70b-versatile" in routes
    assert "<strong>groq/openai/gpt-oss-120b</strong>" in html


@pytest.mark.django_db
def test_keyless_provider_is_added_without_a_key(staff_client, emulator):
    response = staff_client.post(
        ADD_URL,
        {"provider": "pollinations", "keys": "", "base_url": f"{emulator.url}/keyless-pollinations/v1"},
    )
    assert response.status_code == 200
    key = ProviderKey.objects.get(provider__slug="pollinations")
    assert key.label == "anonymous" and key.secret == "" and key.status == ProviderKey.Status.ACTIVE
    (call,) = emulator.calls_for(provider="keyless-pollinations")
    assert call.key is None and "authorization" not in call.headers
    assert "pollinations/openai" in _auto_routes()


@pytest.mark.django_db
def test_a_provider_that_needs_a_key_is_refused_without_one(staff_client):
    response = staff_client.post(ADD_URL, {"provider": "groq", "keys": "\n  \n"})
    assert response.status_code == 200
    assert "needs an API key" in response.content.decode()
    assert not Provider.objects.exists()


def test_chat_for_auto_routes_through_the_provider_added_in_the_admin(
    client, emulator, gateway, django_user_model
):
    # (`gateway` brings its own user "alice", so no `team` here.)
    client.force_login(django_user_model.objects.create_superuser("root", password="root-pass-123"))
    response = client.post(
        ADD_URL, {"provider": "groq", "keys": "live-key-0001", "base_url": f"{emulator.url}/groq/v1"}
    )
    assert response.status_code == 200 and ProviderKey.objects.get(provider__slug="groq").status == "active"
    emulator.reset()

    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello through auto"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-freellm-provider"] == "groq"
    assert raw.headers["x-freellm-model"] == "openai/gpt-oss-120b"  # the first entry of the ranked chain
    (call,) = emulator.calls_for(provider="groq")
    assert call.key == "live-key-0001" and call.model == "openai/gpt-oss-120b"


@pytest.mark.django_db
def test_native_providers_are_added_and_their_keys_tested_in_their_own_wire_format(staff_client, emulator):
    # Cloudflare: the key is account_id:token; the account goes into the path, the token into Bearer.
    staff_client.post(
        ADD_URL,
        {
            "provider": "cloudflare",
            "keys": "acct-one:cf-good-0001\nacct-two:cf-bad-0002;401",
            "base_url": f"{emulator.url}/cloudflare/client/v4",
        },
    )
    calls = {c.key: c for c in emulator.calls_for(provider="cloudflare")}
    assert set(calls) == {"cf-good-0001", "cf-bad-0002;401"}
    assert "/accounts/acct-one/ai/run/" in calls["cf-good-0001"].path
    statuses = dict(ProviderKey.objects.filter(provider__slug="cloudflare").values_list("label", "status"))
    assert statuses == {"cloudflare-1": "active", "cloudflare-2": "invalid"}
    assert FallbackChain.objects.get(name="bge-m3").kind == "embedding"

    # Gemini: the key travels in x-goog-api-key.
    staff_client.post(
        ADD_URL, {"provider": "gemini", "keys": "gem-good-0001", "base_url": f"{emulator.url}/gemini/v1beta"}
    )
    (call,) = emulator.calls_for(provider="gemini")
    assert call.key == "gem-good-0001" and call.headers.get("x-goog-api-key") == "gem-good-0001"
    assert ProviderKey.objects.get(provider__slug="gemini").status == "active"
    assert "gemini/gemini-2.5-flash" in _auto_routes()
