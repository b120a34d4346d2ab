"""Upstream error text that quotes part of a provider key (or the client's unified key) never reaches the
client, the request log or a key's status detail: any run of 8 or more of its characters is blanked."""

from __future__ import annotations

import httpx
import pytest

from providers.adapters.transport import redact
from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

TOKEN = "gsk_partial-ECHO-7781-secret"


def _leaks(text: str, secret: str) -> bool:
    return any(secret[i:i + 8] in text for i in range(len(secret) - 7))


def _stored_text() -> str:
    from analytics.models import RequestLog
    from providers.models import ProviderKey

    wait_until_idle()
    return repr(list(RequestLog.objects.values())) + repr(list(ProviderKey.objects.values_list("status_detail")))


def test_redact_blanks_every_run_of_eight_characters_of_a_secret():
    assert redact(f"bad key {TOKEN[3:-3]}!", TOKEN) == "bad key ***!"
    assert redact(f"{TOKEN[:8]} and {TOKEN[-9:]}", TOKEN) == "*** and ***"
    assert redact(f"only {TOKEN[:7]} here", TOKEN) == f"only {TOKEN[:7]} here"
    assert redact("short key abcd", "abcd") == "short key ***"
    assert redact("nothing to hide", TOKEN, None, "") == "nothing to hide"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", ["fail=1:400", "401"])
def test_a_partly_quoted_provider_key_is_blanked_everywhere(gateway, emulator, stream, status):
    add_provider(emulator, "groq", [f"{TOKEN};{status};echo=partial"], ["llama"])
    add_chain("auto", ["groq/llama"])

    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})

    assert resp.status_code >= 400
    # The provider did quote most of the key; the gateway keeps it in.
    assert "(key: ***" in resp.text or status == "401"
    assert not _leaks(resp.text, TOKEN)
    assert not _leaks(_stored_text(), TOKEN)


def test_the_clients_unified_key_quoted_back_by_an_upstream_is_blanked(gateway, emulator):
    add_provider(emulator, "groq", ["k;fail=1:400;echo=prompt"], ["llama"])
    add_chain("auto", ["groq/llama"])

    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "messages": [{"role": "user", "content": f"my key is {gateway.api_key}"}]})

    assert resp.status_code == 400 and "you said: my key is ***" in resp.json()["error"]["message"]
    assert not _leaks(resp.text, gateway.api_key)
    assert not _leaks(_stored_text(), gateway.api_key)


@pytest.mark.django_db
def test_a_key_test_stores_no_part_of_a_partly_quoted_key(emulator):
    from providers.models import Provider, ProviderKey, UpstreamModel
    from providers.services import provider_key_test

    provider = Provider.objects.create(slug="groq", name="Groq", base_url=emulator.base_url("groq", "openai/v1"))
    UpstreamModel.objects.create(provider=provider, model_id="echo-small", kind="chat")
    key = ProviderKey.objects.create(provider=provider, label="a", secret=f"{TOKEN};401;echo=partial")

    result = provider_key_test(key=key)

    key.refresh_from_db()
    assert result.ok is False and "***" in key.status_detail
    assert not _leaks(key.status_detail, key.secret)
