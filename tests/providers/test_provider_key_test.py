""""Test key now": one real upstream call (the emulator over HTTP) that sets the key's status."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from providers.models import Provider, ProviderKey, UpstreamModel
from providers.services import provider_key_test

pytestmark = pytest.mark.django_db


@pytest.fixture
def groq(emulator) -> Provider:
    provider = Provider.objects.create(slug="groq", name="Groq", base_url=emulator.base_url("groq", "openai/v1"))
    UpstreamModel.objects.create(provider=provider, model_id="echo-small", kind="chat")
    UpstreamModel.objects.create(provider=provider, model_id="embed-small", kind="embedding", family="emu")
    return provider


def make_key(provider: Provider, secret: str) -> ProviderKey:
    return ProviderKey.objects.create(provider=provider, label=secret.split(";")[0], secret=secret)


def test_working_key_becomes_active_after_a_one_token_chat(groq, emulator):
    key = make_key(groq, "good-key-0001")

    result = provider_key_test(key=key)

    assert result.ok is True
    key.refresh_from_db()
    assert key.status == ProviderKey.Status.ACTIVE
    assert key.status_detail == "OK: groq/echo-small answered"
    [call] = emulator.calls
    assert call.model == "echo-small" and call.key == "good-key-0001"
    assert call.body["max_tokens"] == 1


def test_rejected_key_becomes_invalid_without_its_secret_in_the_detail(groq):
    key = make_key(groq, "revoked-key;401")

    result = provider_key_test(key=key)

    assert result.ok is False
    key.refresh_from_db()
    assert key.status == ProviderKey.Status.INVALID
    assert key.status_detail.startswith("rejected by groq/echo-small (401)")
    assert "revoked-key" not in key.status_detail


def test_rate_limited_key_is_still_a_good_key(groq):
    key = make_key(groq, "busy-key;429")

    assert provider_key_test(key=key).ok is True
    key.refresh_from_db()
    assert key.status == ProviderKey.Status.ACTIVE
    assert "rate limited" in key.status_detail


def test_server_error_is_inconclusive_and_keeps_the_status(groq):
    key = make_key(groq, "flaky-key;503")
    key.status = ProviderKey.Status.INVALID
    key.save()

    result = provider_key_test(key=key)

    assert result.ok is None
    key.refresh_from_db()
    assert key.status == ProviderKey.Status.INVALID
    assert key.status_detail.startswith("inconclusive: groq/echo-small server_error (503)")


def test_embedding_only_provider_is_tested_with_an_embedding(groq, emulator):
    groq.models.filter(kind="chat").delete()
    key = make_key(groq, "embed-key-0001")

    assert provider_key_test(key=key).ok is True
    [call] = emulator.calls
    assert call.model == "embed-small"


def test_provider_without_models_says_so(emulator):
    provider = Provider.objects.create(slug="empty", name="Empty", base_url=emulator.base_url("empty"))
    key = make_key(provider, "lonely-key-0001")

    result = provider_key_test(key=key)

    assert result.ok is None and result.detail == "no enabled chat or embedding model to test with"
    assert emulator.calls == []


def test_admin_action_reports_each_result_as_a_message(groq, team):
    good, bad = make_key(groq, "good-key-0002"), make_key(groq, "bad-key;403")
    client = Client()
    client.force_login(team.staff)

    response = client.post(
        reverse("admin:providers_providerkey_changelist"),
        {"action": "test_now", "_selected_action": [good.pk, bad.pk]},
    )

    shown = sorted((m.level_tag, m.message) for m in get_messages(response.wsgi_request))
    assert len(shown) == 2
    assert shown[0][0] == "error"
    assert shown[0][1].startswith("groq/bad-key: rejected by groq/echo-small (403)")
    assert shown[1] == ("success", "groq/good-key-0002: OK: groq/echo-small answered")
    assert not any("bad-key;403" in text for _, text in shown)
