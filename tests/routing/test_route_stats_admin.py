"""Live route stats in the admin: the model page (per key) and the dashboard (per chain member), read from this
process's store in embedded mode and from the shared record in Redis."""

from __future__ import annotations

import asyncio

import pytest
from django.urls import reverse

DASHBOARD = "/admin/analytics/requestlog/dashboard/"


@pytest.fixture
def routes(db):
    from providers.models import ChainEntry, FallbackChain, Provider, ProviderKey, UpstreamModel
    from routing.stats import reset_stats_store

    reset_stats_store()
    groq = Provider.objects.create(slug="groq", name="Groq", base_url="http://127.0.0.1:9/v1")
    ProviderKey.objects.create(provider=groq, label="main", secret="gsk_stats_secret_0001")
    ProviderKey.objects.create(provider=groq, label="spare", secret="gsk_stats_secret_0002")
    llama = UpstreamModel.objects.create(provider=groq, model_id="llama")
    qwen = UpstreamModel.objects.create(provider=groq, model_id="qwen")
    chain = FallbackChain.objects.create(name="auto", strategy="fastest")
    ChainEntry.objects.create(chain=chain, model=llama, position=0)
    ChainEntry.objects.create(chain=chain, model=qwen, position=1)
    yield llama
    reset_stats_store()


def _observe(store) -> None:
    for ok in (True, True, True, False):
        store.observe("groq", "llama", "main", ok=ok, ttft=0.4, tokens=200, gen_seconds=2.0)


def test_model_page_shows_the_live_stats_by_key(client, staff_user, routes, settings):
    from routing.stats import get_stats_store

    settings.REDIS_URL = ""
    _observe(get_stats_store())
    client.force_login(staff_user)
    page = client.get(reverse("admin:providers_upstreammodel_change", args=[routes.pk])).content.decode()
    stats = page.split("Live stats", 1)[1]
    whole = stats.split("<td>all keys</td>", 1)[1].split("</tr>", 1)[0]
    # 3 of 4 with the Beta(1, 1) prior: (3 + 1) / (4 + 2).
    assert "<td>4</td>" in whole and "66.7 %" in whole and "0.4 s" in whole and "<td>100</td>" in whole
    spare = stats.split("<td>spare</td>", 1)[1].split("</tr>", 1)[0]
    assert "—" in spare
    assert "gsk_stats_secret" not in page


def test_dashboard_shows_each_chain_members_stats(client, staff_user, routes, settings):
    from routing.stats import get_stats_store

    settings.REDIS_URL = ""
    _observe(get_stats_store())
    client.force_login(staff_user)
    html = client.get(DASHBOARD).content.decode()
    card = html.split("Live route stats per chain", 1)[1].split("</section>", 1)[0]
    llama = card.split("<code>groq/llama</code>", 1)[1].split("</tr>", 1)[0]
    assert "67%" in llama and "0.40 s" in llama and "<td>100</td>" in llama
    qwen = card.split("<code>groq/qwen</code>", 1)[1].split("</tr>", 1)[0]
    assert "not called lately" in qwen
    assert "fastest" in card


def test_member_dashboard_has_no_route_stats(client, member_user, routes):
    client.force_login(member_user)
    assert "Live route stats" not in client.get(DASHBOARD).content.decode()


def test_pages_read_the_shared_record_in_redis(client, staff_user, routes, settings, redis_url):
    from routing.stats import RedisStatsBackend, RouteStatsStore

    settings.REDIS_URL = redis_url

    async def gateway_process():
        store = RouteStatsStore(RedisStatsBackend(redis_url))
        _observe(store)
        await store.flush()

    asyncio.run(gateway_process())
    client.force_login(staff_user)
    page = client.get(reverse("admin:providers_upstreammodel_change", args=[routes.pk])).content.decode()
    assert "66.7 %" in page.split("Live stats", 1)[1]


def test_an_empty_answer_counts_against_the_route(gateway, emulator):
    import httpx

    from routing.selectors_stats import route_stats
    from routing.stats import model_key
    from tests.fixtures_gateway import add_chain, add_provider
    from tests.polling import wait_until

    add_provider(emulator, "hollow", ["h;empty"], ["llama"])
    add_provider(emulator, "solid", ["ok"], ["llama"])
    add_chain("auto", ["hollow/llama", "solid/llama"])
    resp = httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.headers["X-FreeLLM-Provider"] == "solid"
    names = [model_key("hollow", "llama"), model_key("solid", "llama")]
    # Stats reach the shared store (Redis in CI) by a background flush.
    def both_seen():
        found = route_stats(names)
        return found if len(found) == 2 else None

    stats = wait_until(both_seen)
    assert round(stats[model_key("hollow", "llama")].fail) == 1 and stats[model_key("hollow", "llama")].ok == 0
    assert round(stats[model_key("solid", "llama")].ok) == 1
