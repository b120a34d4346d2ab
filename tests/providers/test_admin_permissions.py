"""The admin control room: who sees what, and provider secrets that never come back out."""

from __future__ import annotations

import base64
import hashlib
import html
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

from providers.models import FallbackChain, Provider, ProviderKey, UpstreamModel
from routing.models import ApiKey
from routing.services import api_key_create

SECRET = "gsk_live_TOPSECRET_9f8e7d6c5b4a1234"
NEW_SECRET = "gsk_live_ROTATED_0a1b2c3d4e5f6789"

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def provider() -> Provider:
    provider = Provider.objects.create(slug="groq", name="Groq", base_url="https://api.groq.com/openai/v1")
    ProviderKey.objects.create(provider=provider, label="groq-a", secret=SECRET)
    UpstreamModel.objects.create(provider=provider, model_id="llama-3.3-70b-versatile")
    return provider


@pytest.fixture
def keys(team):
    alice_key, alice_raw = api_key_create(user=team.alice, name="alice-laptop")
    bob_key, bob_raw = api_key_create(user=team.bob, name="bob-server")
    return {"alice": alice_key, "bob": bob_key, "alice_raw": alice_raw, "bob_raw": bob_raw}


# --- members: their own API keys and nothing else ------------------------------------------------------


def test_member_sees_only_own_keys(team, keys):
    page = client_for(team.alice).get(reverse("admin:routing_apikey_changelist")).content.decode()

    assert "alice-laptop" in page and keys["alice"].prefix in page
    assert "bob-server" not in page and keys["bob"].prefix not in page


def test_member_cannot_open_another_members_key(team, keys):
    client = client_for(team.alice)
    for view in ("change", "history", "delete"):
        response = client.get(reverse(f"admin:routing_apikey_{view}", args=[keys["bob"].pk]), follow=True)
        assert "bob-server" not in response.content.decode()
        assert keys["bob"].prefix not in response.content.decode()


def test_member_cannot_see_providers_or_their_secrets(team, provider):
    client = client_for(team.alice)

    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:routing_apikey_changelist") in index
    assert "/admin/providers/" not in index

    key = provider.keys.get()
    for url in (
        reverse("admin:providers_provider_changelist"),
        reverse("admin:providers_provider_change", args=[provider.pk]),
        reverse("admin:providers_providerkey_changelist"),
        reverse("admin:providers_providerkey_change", args=[key.pk]),
        reverse("admin:providers_fallbackchain_changelist"),
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        assert SECRET not in response.content.decode()


def test_member_creates_a_key_shown_once_and_stored_hashed(team):
    client = client_for(team.alice)

    response = client.post(reverse("admin:routing_apikey_add"), {"name": "phone"}, follow=True)

    page = response.content.decode()
    raw = re.search(r"(fl-[A-Za-z0-9_-]{40,})", page).group(1)
    api_key = ApiKey.objects.get(name="phone")
    assert api_key.user == team.alice
    assert api_key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert "copy it now" in page
    # Shown once: the next page does not have it, and no page shows the hash.
    again = client.get(reverse("admin:routing_apikey_change", args=[api_key.pk])).content.decode()
    assert raw not in again and api_key.key_hash not in again
    assert api_key.key_hash not in page
    assert raw not in "".join(LogEntry.objects.values_list("change_message", flat=True))
    assert raw not in "".join(LogEntry.objects.values_list("object_repr", flat=True))


def test_member_cannot_create_a_key_for_someone_else(team):
    client_for(team.alice).post(reverse("admin:routing_apikey_add"), {"name": "sneaky", "user": team.bob.pk})

    assert ApiKey.objects.get(name="sneaky").user == team.alice


def test_member_revokes_own_key_but_not_others(team, keys):
    client = client_for(team.alice)
    url = reverse("admin:routing_apikey_changelist")

    client.post(url, {"action": "revoke", "_selected_action": [keys["alice"].pk, keys["bob"].pk]})

    assert ApiKey.objects.get(pk=keys["alice"].pk).revoked_at is not None
    assert ApiKey.objects.get(pk=keys["bob"].pk).revoked_at is None


def test_member_cannot_delete_keys(team, keys):
    response = client_for(team.alice).post(
        reverse("admin:routing_apikey_delete", args=[keys["alice"].pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert ApiKey.objects.filter(pk=keys["alice"].pk).exists()


# --- staff: everything, but never a secret ------------------------------------------------------------


def test_staff_see_every_key_but_never_a_hash(team, keys):
    client = client_for(team.staff)

    page = client.get(reverse("admin:routing_apikey_changelist")).content.decode()
    assert "alice-laptop" in page and "bob-server" in page
    detail = client.get(reverse("admin:routing_apikey_change", args=[keys["bob"].pk])).content.decode()
    assert keys["bob"].prefix in detail
    assert keys["bob"].key_hash not in page + detail
    assert keys["bob_raw"] not in page + detail


def test_staff_create_a_key_for_a_member(team):
    response = client_for(team.staff).post(
        reverse("admin:routing_apikey_add"), {"name": "for-bob", "user": team.bob.pk}, follow=True
    )

    assert ApiKey.objects.get(name="for-bob").user == team.bob
    assert "New API key 'for-bob' for bob" in html.unescape(response.content.decode())


def test_provider_secret_never_in_admin_pages_only_masked(team, provider):
    client = client_for(team.staff)
    key = provider.keys.get()
    pages = {
        url: client.get(url)
        for url in (
            reverse("admin:providers_provider_changelist"),
            reverse("admin:providers_provider_change", args=[provider.pk]),
            reverse("admin:providers_providerkey_changelist"),
            reverse("admin:providers_providerkey_change", args=[key.pk]),
            reverse("admin:providers_providerkey_history", args=[key.pk]),
            reverse("admin:providers_providerkey_delete", args=[key.pk]),
        )
    }

    for url, response in pages.items():
        assert response.status_code == 200, url
        assert SECRET not in response.content.decode(), url
    assert "…1234" in pages[reverse("admin:providers_providerkey_changelist")].content.decode()
    assert "…1234" in pages[reverse("admin:providers_provider_change", args=[provider.pk])].content.decode()
    assert 'type="password"' in pages[reverse("admin:providers_providerkey_change", args=[key.pk])].content.decode()


def _key_form(key: ProviderKey, secret: str) -> dict:
    return {"provider": key.provider_id, "label": key.label, "secret": secret, "enabled": "on"}


def test_blank_secret_keeps_the_old_one_and_records_no_change(team, provider):
    client = client_for(team.staff)
    key = provider.keys.get()

    client.post(reverse("admin:providers_providerkey_change", args=[key.pk]), _key_form(key, ""))

    assert ProviderKey.objects.get(pk=key.pk).secret == SECRET
    entry = LogEntry.objects.get(object_id=str(key.pk))
    assert entry.get_change_message() == "No fields changed."


def test_new_secret_is_stored_and_history_names_only_the_field(team, provider):
    client = client_for(team.staff)
    key = provider.keys.get()

    response = client.post(
        reverse("admin:providers_providerkey_change", args=[key.pk]), _key_form(key, NEW_SECRET), follow=True
    )

    assert NEW_SECRET not in response.content.decode()
    assert ProviderKey.objects.get(pk=key.pk).secret == NEW_SECRET
    entry = LogEntry.objects.get(object_id=str(key.pk))
    assert entry.get_change_message() == "Changed secret."
    history = client.get(reverse("admin:providers_providerkey_history", args=[key.pk])).content.decode()
    assert "Changed secret." in history
    assert NEW_SECRET not in history and SECRET not in history
    assert all(NEW_SECRET not in (e.change_message + e.object_repr) for e in LogEntry.objects.all())


def test_form_errors_do_not_echo_a_typed_secret(team, provider):
    client = client_for(team.staff)
    key = provider.keys.get()
    data = {
        "name": "Groq", "slug": "groq", "adapter": "openai", "base_url": "not a url", "daily_reset_tz": "UTC",
        "headers": "{}", "drop_params": "[]",
        "keys-TOTAL_FORMS": "2", "keys-INITIAL_FORMS": "1", "keys-MIN_NUM_FORMS": "0", "keys-MAX_NUM_FORMS": "1000",
        "keys-0-id": key.pk, "keys-0-provider": provider.pk, "keys-0-label": "groq-a", "keys-0-secret": NEW_SECRET,
        "keys-0-enabled": "on",
        "keys-1-provider": provider.pk, "keys-1-label": "groq-b", "keys-1-secret": NEW_SECRET + "b", "keys-1-enabled": "on",
        "models-TOTAL_FORMS": "0", "models-INITIAL_FORMS": "0", "models-MIN_NUM_FORMS": "0", "models-MAX_NUM_FORMS": "1000",
    }

    response = client.post(reverse("admin:providers_provider_change", args=[provider.pk]), data)

    page = response.content.decode()
    assert response.status_code == 200 and "Please correct the error" in page
    assert NEW_SECRET not in page and SECRET not in page
    assert ProviderKey.objects.get(pk=key.pk).secret == SECRET


def test_adding_keys_inline_on_the_provider_page(team, provider):
    client = client_for(team.staff)
    key = provider.keys.get()
    model = provider.models.get()
    data = {
        "name": "Groq", "slug": "groq", "adapter": "openai", "base_url": provider.base_url, "daily_reset_tz": "UTC",
        "headers": "{}", "drop_params": "[]", "enabled": "on",
        "keys-TOTAL_FORMS": "2", "keys-INITIAL_FORMS": "1", "keys-MIN_NUM_FORMS": "0", "keys-MAX_NUM_FORMS": "1000",
        "keys-0-id": key.pk, "keys-0-provider": provider.pk, "keys-0-label": "groq-a", "keys-0-secret": "",
        "keys-0-enabled": "on",
        "keys-1-provider": provider.pk, "keys-1-label": "groq-b", "keys-1-secret": NEW_SECRET, "keys-1-enabled": "on",
        "models-TOTAL_FORMS": "1", "models-INITIAL_FORMS": "1", "models-MIN_NUM_FORMS": "0", "models-MAX_NUM_FORMS": "1000",
        "models-0-id": model.pk, "models-0-provider": provider.pk, "models-0-model_id": model.model_id,
        "models-0-kind": "chat", "models-0-enabled": "on",
    }

    response = client.post(reverse("admin:providers_provider_change", args=[provider.pk]), data)

    assert response.status_code == 302, response.content.decode()[:3000]
    assert {k.label: k.secret for k in provider.keys.all()} == {"groq-a": SECRET, "groq-b": NEW_SECRET}
    assert all(NEW_SECRET not in e.change_message for e in LogEntry.objects.all())


def test_enable_disable_actions(team, provider):
    client = client_for(team.staff)
    key = provider.keys.get()

    client.post(reverse("admin:providers_providerkey_changelist"), {"action": "disable", "_selected_action": [key.pk]})
    assert not ProviderKey.objects.get(pk=key.pk).enabled
    client.post(reverse("admin:providers_provider_changelist"), {"action": "disable", "_selected_action": [provider.pk]})
    assert not Provider.objects.get(pk=provider.pk).enabled
    client.post(reverse("admin:providers_provider_changelist"), {"action": "enable", "_selected_action": [provider.pk]})
    assert Provider.objects.get(pk=provider.pk).enabled


def test_chain_admin_refuses_an_embedding_family_mix(team, provider):
    a = UpstreamModel.objects.create(provider=provider, model_id="embed-a", kind="embedding", family="fam-a")
    b = UpstreamModel.objects.create(provider=provider, model_id="embed-b", kind="embedding", family="fam-b")
    client = client_for(team.staff)
    data = {
        "name": "embed", "kind": "embedding", "strategy": "priority", "description": "", "enabled": "on",
        "entries-TOTAL_FORMS": "2", "entries-INITIAL_FORMS": "0", "entries-MIN_NUM_FORMS": "0", "entries-MAX_NUM_FORMS": "1000",
        "entries-0-model": a.pk, "entries-0-position": "1",
        "entries-1-model": b.pk, "entries-1-position": "2",
    }

    response = client.post(reverse("admin:providers_fallbackchain_add"), data)

    assert response.status_code == 200
    assert "an embedding chain must use a single model family" in response.content.decode()
    assert not FallbackChain.objects.exists()

    data["entries-TOTAL_FORMS"] = "1"
    response = client.post(reverse("admin:providers_fallbackchain_add"), data)
    assert response.status_code == 302
    assert [e.model for e in FallbackChain.objects.get().entries.all()] == [a]


def test_error_report_shows_neither_posted_secrets_nor_encryption_keys(team, provider, settings):
    """A real 500 (the stored secret no longer decrypts): the report Django mails to ADMINS (what any
    error reporter built on its filter sees) hides the POST values and the key material."""
    import sys

    from django.core.signals import got_request_exception
    from django.views.debug import ExceptionReporter

    from providers.crypto import generate_key_spec

    key = provider.keys.get()
    old_spec = settings.FREELLM_ENCRYPTION_KEYS
    new_spec = generate_key_spec("other")
    settings.FREELLM_ENCRYPTION_KEYS = new_spec
    caught = []

    def capture(sender, request, **kwargs):
        caught.append((request, sys.exc_info()))

    got_request_exception.connect(capture)
    try:
        client = client_for(team.staff)
        client.raise_request_exception = False
        response = client.post(reverse("admin:providers_providerkey_change", args=[key.pk]), _key_form(key, NEW_SECRET))
    finally:
        got_request_exception.disconnect(capture)

    assert response.status_code == 500
    [(request, exc_info)] = caught
    reporter = ExceptionReporter(request, *exc_info, is_email=True)
    # The HTML version (AdminEmailHandler with include_html) also lists every frame's local variables.
    report = reporter.get_traceback_text() + reporter.get_traceback_html()
    assert "DecryptionError" in report
    text = html.unescape(report)
    assert NEW_SECRET not in report and SECRET not in report
    for spec in (old_spec, new_spec):
        material = spec.split(":", 1)[1]
        assert material not in report
        # The raw key bytes, however a report wraps them: no 10-character run of their repr appears.
        raw = repr(base64.b64decode(material))[2:-1]
        assert not [raw[i : i + 10] for i in range(len(raw) - 10) if raw[i : i + 10] in text]
