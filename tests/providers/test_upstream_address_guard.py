"""SSRF guard: base URLs at internal addresses are refused where they are configured and where they are
called (router, key tests, health probes), unless FREELLM_UPSTREAM_ALLOW lets them through."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx
import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from providers.models import Provider, ProviderKey, UpstreamModel
from providers.services import provider_key_test
from tests.fixtures_gateway import add_chain, add_provider

INTERNAL_URLS = [
    "http://169.254.169.254/latest/meta-data",
    "http://127.0.0.1:6379",
    "http://10.0.0.1/v1",
    "http://[::1]:8080/v1",
    "http://0x7f000001/v1",
    "http://127.1/v1",
    "http://[::ffff:10.0.0.1]/v1",
    "http://100.64.0.1/v1",
    "http://0.0.0.0:8000/v1",
    "http://metadata.google.internal/computeMetadata/v1",
    "http://localhost:11434/v1",
]


@pytest.fixture
def no_allowlist(settings):
    settings.FREELLM_UPSTREAM_ALLOW = ""


@pytest.mark.parametrize("url", INTERNAL_URLS + ["ftp://api.example.com/v1", "file:///etc/passwd"])
def test_configured_internal_or_non_http_urls_are_refused_naming_the_setting(no_allowlist, url):
    from providers.netguard import upstream_url_check

    with pytest.raises(ValueError) as refused:
        upstream_url_check(url)
    message = str(refused.value)
    assert "refused" in message
    if url.startswith("http"):
        assert "FREELLM_UPSTREAM_ALLOW" in message


def test_public_urls_and_allowed_internal_ones_pass(settings):
    from providers.netguard import upstream_url_check

    settings.FREELLM_UPSTREAM_ALLOW = "127.0.0.1/32, ollama"
    upstream_url_check("https://api.groq.com/openai/v1")
    upstream_url_check("http://8.8.8.8/v1")
    upstream_url_check("http://127.0.0.1:11434/v1")
    upstream_url_check("http://ollama:11434/v1")
    with pytest.raises(ValueError):
        upstream_url_check("http://127.0.0.2:11434/v1")


@pytest.mark.django_db
def test_import_config_refuses_an_internal_base_url(no_allowlist, tmp_path):
    path = tmp_path / "freellm.yaml"
    path.write_text("providers:\n  - name: evil\n    base_url: http://169.254.169.254/v1\n")

    with pytest.raises(Exception) as refused:
        call_command("import_config", str(path))

    assert "169.254.169.254" in str(refused.value) and "FREELLM_UPSTREAM_ALLOW" in str(refused.value)
    assert not Provider.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["ftp://files.example.com/v1", "http://169.254.169.254/v1", "http://[::1]:6379"])
def test_the_admin_form_refuses_internal_and_non_http_base_urls(no_allowlist, admin_client: Client, url):
    resp = admin_client.post(reverse("admin:providers_provider_add"), {
        "name": "Evil", "slug": "evil", "adapter": "openai", "base_url": url, "enabled": "on",
        "daily_reset_tz": "UTC", "headers": "{}", "drop_params": "[]",
        "keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0", "models-TOTAL_FORMS": "0", "models-INITIAL_FORMS": "0",
    })

    assert resp.status_code == 200  # the form again, with the error
    assert not Provider.objects.filter(slug="evil").exists()
    assert "refused" in resp.content.decode()


@pytest.mark.django_db
def test_add_from_catalog_refuses_an_internal_base_url_override(no_allowlist, admin_client: Client):
    from providers.catalog import catalog_providers

    slug = next(p.slug for p in catalog_providers() if not p.keyless)
    resp = admin_client.post(reverse("admin:providers_provider_add_from_catalog"),
                             {"provider": slug, "keys": "sk-test-123456", "base_url": "http://10.0.0.1/v1"})

    assert resp.status_code == 200
    assert "refused" in resp.content.decode()
    assert not Provider.objects.filter(slug=slug).exists()


@pytest.mark.django_db
def test_a_key_test_never_sends_the_key_to_a_refused_address(no_allowlist, emulator):
    # A provider saved before the guard existed (or an address that only DNS makes internal).
    provider = Provider.objects.create(slug="groq", name="Groq", base_url=emulator.base_url("groq", "openai/v1"))
    UpstreamModel.objects.create(provider=provider, model_id="echo-small", kind="chat")
    key = ProviderKey.objects.create(provider=provider, label="a", secret="good-key-0001")

    result = provider_key_test(key=key)

    assert result.ok is None
    assert "refused" in result.detail and "FREELLM_UPSTREAM_ALLOW" in result.detail
    assert emulator.calls == []


def test_the_router_does_not_call_a_refused_address(no_allowlist, gateway, emulator):
    add_provider(emulator, "groq", ["good-key"], ["llama"])
    add_chain("auto", ["groq/llama"])

    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})

    assert resp.status_code >= 500
    assert emulator.calls == []


def _internal_name() -> str | None:
    """A host name this machine resolves (hosts file or DNS) to a non-public address, not an IP literal."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return None
    return name if addresses and not all(ipaddress.ip_address(a).is_global for a in addresses) else None


def test_a_name_is_resolved_and_every_address_checked_at_connect_time(no_allowlist):
    from providers.netguard import UpstreamAddressRefused, guarded_async_client

    name = _internal_name()
    if name is None:
        pytest.skip("this machine's host name does not resolve to an internal address")

    async def call() -> None:
        async with guarded_async_client() as client:
            await client.get(f"http://{name}:9/")

    with pytest.raises(UpstreamAddressRefused, match="FREELLM_UPSTREAM_ALLOW"):
        asyncio.run(call())

