"""Outbound proxies (per provider or per key, HTTP(S) or SOCKS5): key tests, discovery and the router's
own calls go through them, checked against a real local proxy server; proxies round-trip through the
config file, are encrypted at rest and never shown with their credentials."""

from __future__ import annotations

import pytest
from django.db import connection

from providers.config_schema import proxy_url_problem
from providers.models import Provider, ProviderKey
from providers.services import config_export, config_import, provider_key_test
from providers.services_discovery import provider_models_discover
from tests.fixtures_gateway import add_chain, add_provider
from tests.proxy_server import ProxyServer


@pytest.fixture
def proxy():
    with ProxyServer(user="proxyuser", password="proxypass") as server:
        yield server


def _emulator_port(emulator) -> str:
    return emulator.url.rsplit(":", 1)[1]


@pytest.mark.django_db
def test_a_key_test_goes_through_the_providers_http_proxy_with_its_credentials(emulator, proxy):
    provider = add_provider(emulator, "groq", ["live-key"], ["echo-small"], proxy=proxy.http_url)
    result = provider_key_test(key=provider.keys.get())
    assert result.ok is True, result.detail
    assert [(s.protocol, s.target, s.authenticated) for s in proxy.seen] == [
        ("http-forward", f"127.0.0.1:{_emulator_port(emulator)}", True)
    ]
    assert emulator.calls_for(provider="groq", path="/chat/completions")


@pytest.mark.django_db
def test_a_keys_socks5_proxy_overrides_the_providers(emulator, proxy):
    provider = add_provider(emulator, "groq", ["live-key"], ["echo-small"], proxy="http://127.0.0.1:9")
    key = provider.keys.get()
    key.proxy = proxy.socks5_url
    key.save()
    assert provider_key_test(key=key).ok is True
    assert [(s.protocol, s.authenticated) for s in proxy.seen] == [("socks5", True)]
    # Discovery uses the same key and therefore the same proxy.
    assert provider_models_discover(provider=provider).ok
    assert len(proxy.seen) == 2


@pytest.mark.django_db
def test_a_dead_proxy_is_reported_not_bypassed(emulator):
    provider = add_provider(emulator, "groq", ["live-key"], ["echo-small"], proxy="socks5://127.0.0.1:9")
    result = provider_key_test(key=provider.keys.get())
    assert result.ok is None and "inconclusive" in result.detail
    assert not emulator.calls_for(provider="groq")


def test_the_router_sends_a_proxied_routes_calls_through_the_proxy(gateway, emulator, proxy):
    add_provider(emulator, "direct", ["d-key"], ["echo-small"])
    add_provider(emulator, "viaproxy", ["p-key"], ["echo-small"], proxy=proxy.socks5_url)
    add_chain("proxied", ["viaproxy/echo-small"])
    add_chain("plain", ["direct/echo-small"])
    client = gateway.openai()
    for _ in range(2):
        answer = client.chat.completions.create(model="proxied", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
    client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}])
    assert emulator.calls_for(provider="viaproxy") and emulator.calls_for(provider="direct")
    # Every proxied call went through an authenticated SOCKS5 tunnel to the emulator; the direct route's
    # call did not (at most one tunnel per proxied request).
    assert {(s.protocol, s.target, s.authenticated) for s in proxy.seen} == {
        ("socks5", f"127.0.0.1:{_emulator_port(emulator)}", True)
    }
    assert 1 <= len(proxy.seen) <= 2


@pytest.mark.django_db
def test_proxies_round_trip_through_the_config_file_and_credentials_stay_secret():
    config_import(data={"providers": [{
        "name": "p", "base_url": "https://example.test/v1", "proxy": "socks5://u:secretpw@corp-proxy.example.net:1080",
        "keys": [{"label": "k1", "secret": "s1", "proxy": "http://proxy.example.net:3128"}],
    }]})  # fmt: skip
    provider = Provider.objects.get(slug="p")
    assert provider.proxy == "socks5://u:secretpw@corp-proxy.example.net:1080"
    with connection.cursor() as cursor:
        cursor.execute("SELECT proxy FROM providers_provider WHERE slug = 'p'")
        stored = cursor.fetchone()[0]
    assert "secretpw" not in stored and stored.startswith("v1:")

    plain = config_export(with_secrets=False)["providers"][0]
    assert "proxy" not in plain  # it carries a password: left out like a secret (import keeps it)
    assert plain["keys"][0]["proxy"] == "http://proxy.example.net:3128"
    full = config_export(with_secrets=True)["providers"][0]
    assert full["proxy"] == "socks5://u:secretpw@corp-proxy.example.net:1080"
    config_import(data={"providers": [plain]})
    assert Provider.objects.get(slug="p").proxy == "socks5://u:secretpw@corp-proxy.example.net:1080"
    config_import(data={"providers": [{**plain, "proxy": ""}]})
    assert Provider.objects.get(slug="p").proxy == ""
    assert ProviderKey.objects.get(label="k1").proxy == "http://proxy.example.net:3128"


@pytest.mark.parametrize(
    ("url", "ok"),
    [("http://h:3128", True), ("https://u:p@h:443", True), ("socks5://h:1080", True), ("socks5h://h:1080", True),
     ("ftp://h", False), ("http://h:3128/path", False), ("http://h:notaport", False), ("h:3128", False)],
)
def test_proxy_url_validation(url, ok):
    assert (proxy_url_problem(url) is None) is ok


@pytest.fixture
def staff_client(client, team):
    client.force_login(team.staff)
    return client


@pytest.mark.django_db
def test_the_admin_never_shows_a_proxy_password_and_keeps_it_when_left_blank(staff_client, emulator):
    provider = add_provider(emulator, "groq", ["live-key"], ["echo-small"], proxy="socks5://u:hunter22@corp-proxy.example.net:1080")
    url = f"/admin/providers/provider/{provider.pk}/change/"
    page = staff_client.get(url).content.decode()
    assert "hunter22" not in page and "socks5://***@corp-proxy.example.net:1080" in page
    form = {
        "name": "groq", "slug": "groq", "adapter": "openai", "base_url": provider.base_url, "enabled": "on",
        "headers": "{}", "drop_params": "[]", "daily_reset_tz": "UTC", "proxy": "",
        "keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0", "models-TOTAL_FORMS": "0", "models-INITIAL_FORMS": "0",
    }  # fmt: skip
    response = staff_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Provider.objects.get(pk=provider.pk).proxy == "socks5://u:hunter22@corp-proxy.example.net:1080"
    response = staff_client.post(url, {**form, "proxy": "gopher://x"})
    assert "The proxy URL must be a proxy URL" in response.content.decode()
    staff_client.post(url, {**form, "proxy": "-"})
    assert Provider.objects.get(pk=provider.pk).proxy == ""


@pytest.mark.django_db
def test_the_key_page_sets_a_keys_proxy_write_only(staff_client, emulator):
    provider = add_provider(emulator, "groq", ["live-key"], ["echo-small"])
    key = provider.keys.get()
    url = f"/admin/providers/providerkey/{key.pk}/change/"
    form = {"provider": provider.pk, "label": key.label, "secret": "", "enabled": "on",
            "proxy": "http://keyuser:keypass99@keys-proxy.example.net:3128"}
    assert staff_client.post(url, form).status_code == 302
    key.refresh_from_db()
    assert key.proxy == "http://keyuser:keypass99@keys-proxy.example.net:3128" and key.secret == "live-key"
    page = staff_client.get(url).content.decode()
    assert "keypass99" not in page and "http://***@keys-proxy.example.net:3128" in page


def test_the_ssrf_guard_refuses_an_internal_proxy_host_when_it_is_configured():
    problem = proxy_url_problem("socks5://u:p@10.0.0.5:1080")
    assert problem.startswith("is refused: proxy host") and "FREELLM_UPSTREAM_ALLOW" in problem
    assert "proxy host" in proxy_url_problem("http://metadata.google.internal:3128")
    assert proxy_url_problem("socks5://corp-proxy.example.net:1080") is None


@pytest.mark.django_db
def test_the_ssrf_guard_checks_the_proxy_address_when_connecting(emulator, proxy, settings):
    # The proxy listens on loopback, which the guard lets through in tests only by the allowlist: without
    # it the connection to the proxy is refused (the upstream behind it is never reached).
    provider = add_provider(emulator, "groq", ["live-key"], ["echo-small"], proxy=proxy.socks5_url)
    settings.FREELLM_UPSTREAM_ALLOW = ""
    result = provider_key_test(key=provider.keys.get())
    assert result.ok is None and "FREELLM_UPSTREAM_ALLOW" in result.detail, result.detail
    assert proxy.seen == [] and not emulator.calls_for(provider="groq")
