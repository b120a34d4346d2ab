"""The wire quirks the new catalog entries declare, each exercised against the emulator over real HTTP:
headers a provider wants (AI Horde's Client-Agent), parameters it refuses (iFlytek's drop_params), the
anonymous use of keyless providers (OVHcloud, Kilo) and the AI Horde's own auth header."""

from __future__ import annotations

import httpx
import pytest

from providers.adapters import get_adapter
from providers.adapters.base import Target
from providers.catalog import catalog_provider
from providers.models import Provider, ProviderKey
from providers.services import provider_key_test
from providers.services_catalog import provider_add_from_catalog
from tests.adapter_helpers import TIMEOUTS


def _target(slug: str, base_url: str, key: str | None, model: str) -> Target:
    entry = catalog_provider(slug)
    return Target(provider=slug, base_url=base_url, model=model, api_key=key, headers=dict(entry.headers),
                  drop_params=frozenset(entry.drop_params))


async def test_iflytek_drops_the_parameters_spark_refuses(emulator):
    request = {
        "model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
        "response_format": {"type": "json_object"}, "logit_bias": {"1": 2}, "logprobs": True,
    }  # fmt: skip
    async with httpx.AsyncClient() as client:
        stream = await get_adapter("openai").chat_stream(
            client, _target("iflytek", emulator.base_url("iflytek"), "spark-pass", "lite"), request, TIMEOUTS
        )
        [chunk async for chunk in stream.chunks()]
    [call] = emulator.calls_for(provider="iflytek")
    assert call.body == {"model": "lite", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                         "stream": True}


@pytest.mark.django_db
def test_aihorde_from_the_catalog_sends_its_client_agent_and_the_anonymous_key(emulator):
    result = provider_add_from_catalog(slug="aihorde", keys=[], base_url=emulator.base_url("aihorde", "api/v2"))
    [check] = result.keys
    assert check.ok is True, check.detail
    submit = emulator.calls_for(provider="aihorde", path="/generate/text/async")[0]
    assert submit.headers["client-agent"] == catalog_provider("aihorde").headers["Client-Agent"]
    assert submit.headers["apikey"] == "0000000000"
    assert submit.body["models"] == []


@pytest.mark.django_db
def test_aihorde_registered_key_goes_in_the_apikey_header_and_a_bad_one_is_marked_invalid(emulator):
    provider_add_from_catalog(slug="aihorde", keys=["horde-reg-key;401"], base_url=emulator.base_url("aihorde", "api/v2"),
                              test_keys=False)
    key = ProviderKey.objects.get(provider__slug="aihorde", label="aihorde-1")
    result = provider_key_test(key=key)
    assert result.ok is False and "horde-reg-key" not in result.detail
    key.refresh_from_db()
    assert key.status == ProviderKey.Status.INVALID
    assert emulator.calls_for(provider="aihorde")[0].headers["apikey"] == "horde-reg-key;401"


@pytest.mark.django_db
@pytest.mark.parametrize("slug", ["ovhcloud", "kilo"])
def test_keyless_providers_answer_without_an_authorization_header(emulator, slug):
    result = provider_add_from_catalog(slug=slug, keys=[], base_url=emulator.base_url(f"keyless-{slug}"))
    [check] = result.keys
    assert check.ok is True, check.detail
    [call] = emulator.calls_for(provider=f"keyless-{slug}")
    assert "authorization" not in call.headers
    assert Provider.objects.get(slug=slug).keyless
