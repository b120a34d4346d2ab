"""Chain strategies through the gateway: members ordered by live stats, provider-wide failures skipped."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider

_turns = iter(range(10**6))


@pytest.fixture(autouse=True)
def _no_exploration(settings):
    settings.FREELLM_EXPLORATION = 0.0


def _chat(gw, model="auto", key=None):
    resp = httpx.post(f"{gw.base_url}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key or gw.api_key}"},
                      # Each request a conversation of its own: a sticky session would outrank the strategy.
                      json={"model": model, "messages": [{"role": "user", "content": f"hi {next(_turns)}"}]})
    assert resp.status_code == 200, resp.text
    return resp


def _strategy(name: str, strategy: str) -> None:
    from providers.models import FallbackChain

    chain = FallbackChain.objects.get(name=name)
    chain.strategy = strategy
    chain.save()


def _set_secret(provider: str, secret: str) -> None:
    from providers.models import ProviderKey

    key = ProviderKey.objects.get(provider__slug=provider)
    key.secret = secret
    key.save()


def test_fastest_prefers_the_quick_member_and_leaves_it_when_it_fails(gateway, emulator, django_user_model):
    from routing.services import api_key_create

    add_provider(emulator, "slowpoke", ["ok;slow=0.25"], ["llama"])
    add_provider(emulator, "quick", ["ok"], ["llama"])
    add_chain("auto", ["slowpoke/llama", "quick/llama"])
    _strategy("auto", "fastest")

    warm_up = [_chat(gateway).headers["X-FreeLLM-Provider"] for _ in range(2)]
    assert sorted(warm_up) == ["quick", "slowpoke"]  # a member never seen is tried: both get measured
    served = [_chat(gateway) for _ in range(4)]
    assert sum(r.headers["X-FreeLLM-Provider"] == "quick" for r in served) >= 3
    assert served[-1].headers["X-FreeLLM-Strategy"].startswith("fastest; quick/llama=")

    _set_secret("quick", "ok;500")
    # Two clients: one client's 5xx on a route count once per window (it cannot open a breaker alone).
    _, other = api_key_create(user=django_user_model.objects.create_user("bob", password="x"), name="b")
    later = [_chat(gateway, key=key).headers["X-FreeLLM-Provider"] for key in (gateway.api_key, other) * 2]
    assert later == ["slowpoke"] * 4
    # Two failed calls (one per client) open quick's breaker; after that it is skipped without a call.
    assert len([c for c in emulator.calls_for(provider="quick") if c.status == 500]) == 2


def test_reliable_avoids_a_flaky_member(gateway, emulator):
    add_provider(emulator, "flaky", ["ok;every=2:503"], ["llama"])
    add_provider(emulator, "solid", ["ok"], ["llama"])
    add_chain("auto", ["flaky/llama", "solid/llama"])
    _strategy("auto", "reliable")
    for _ in range(6):
        _chat(gateway)
    tail = [_chat(gateway).headers["X-FreeLLM-Provider"] for _ in range(4)]
    assert tail == ["solid"] * 4


def test_a_suffix_picks_the_strategy_per_request(gateway, emulator):
    add_provider(emulator, "slowpoke", ["ok;slow=0.2"], ["llama"])
    add_provider(emulator, "quick", ["ok"], ["llama"])
    add_chain("auto", ["slowpoke/llama", "quick/llama"])
    for _ in range(2):
        _chat(gateway, "auto:fast")
    assert _chat(gateway, "auto:fast").headers["X-FreeLLM-Provider"] == "quick"
    plain = _chat(gateway, "auto")
    assert plain.headers["X-FreeLLM-Provider"] == "slowpoke"  # the chain itself keeps its order
    assert "X-FreeLLM-Strategy" not in plain.headers


def test_a_provider_whose_keys_all_answer_500_costs_one_call_per_request(gateway, emulator):
    add_provider(emulator, "broken", ["a;500", "b;500", "c;500", "d;500"], ["llama"])
    add_provider(emulator, "backup", ["ok"], ["llama"])
    add_chain("auto", ["broken/llama", "backup/llama"])
    resp = _chat(gateway)
    assert resp.headers["X-FreeLLM-Provider"] == "backup"
    assert len(emulator.calls_for(provider="broken")) == 1
    assert resp.headers["X-FreeLLM-Trail"].count("skipped:provider_down") == 3


def test_a_refused_connection_skips_every_model_of_the_provider(gateway, emulator):
    from providers.models import Provider

    add_provider(emulator, "gone", ["a", "b"], ["one", "two"])
    add_provider(emulator, "backup", ["ok"], ["llama"])
    # Nothing listens on port 1: the connection is refused.
    Provider.objects.filter(slug="gone").update(base_url="http://127.0.0.1:1/v1")
    add_chain("auto", ["gone/one", "gone/two", "backup/llama"])
    resp = _chat(gateway)
    assert resp.headers["X-FreeLLM-Provider"] == "backup"
    assert resp.headers["X-FreeLLM-Attempts"] == "2"
    assert "gone/two/* -> skipped:provider_down" in resp.headers["X-FreeLLM-Trail"]


def test_a_conversation_in_progress_stays_on_its_model(gateway, emulator):
    add_provider(emulator, "slowpoke", ["ok;slow=0.2"], ["llama"])
    add_provider(emulator, "quick", ["ok"], ["llama"])
    add_chain("auto", ["slowpoke/llama", "quick/llama"])
    _strategy("auto", "fastest")
    session = {"Authorization": f"Bearer {gateway.api_key}", "X-Session-Id": "s1"}

    def turn():
        resp = httpx.post(f"{gateway.base_url}/chat/completions", headers=session, timeout=30,
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        return resp.headers["X-FreeLLM-Provider"]

    assert turn() == "slowpoke"  # both unseen: chain order
    _chat(gateway)  # quick gets measured (faster) in another conversation
    assert [turn() for _ in range(3)] == ["slowpoke"] * 3


def test_stats_are_shared_through_redis_and_survive_a_restart(redis_url, settings):
    import asyncio

    from routing.stats import RedisStatsBackend, RouteStatsStore, model_key

    settings.REDIS_URL = redis_url

    async def run():
        first = RouteStatsStore(RedisStatsBackend(redis_url))
        for ok in (True, True, False):
            first.observe("groq", "llama", "k1", ok=ok, ttft=0.2, tokens=100, gen_seconds=1.0)
        await first.flush()
        # Another process (or this one after a restart): nothing in memory, the record is in Redis.
        second = RouteStatsStore(RedisStatsBackend(redis_url))
        second.observe("groq", "llama", "k2", ok=True, ttft=0.4)
        await second.flush()
        return (await RouteStatsStore(RedisStatsBackend(redis_url)).view([model_key("groq", "llama")]))

    stats = asyncio.run(run())[model_key("groq", "llama")]
    assert round(stats.ok, 2) == 3 and round(stats.fail, 2) == 1
    assert abs(stats.ttft - 0.25) < 0.01 and abs(stats.tokens_per_second - 100) < 1
    assert sorted(stats.recent) == [0.2, 0.2, 0.2, 0.4]


def test_a_canonical_id_routes_across_providers_and_is_listed_once(gateway, emulator):
    add_provider(emulator, "groq", ["k;429"], [{"model_id": "llama-3.3-70b-versatile", "canonical": "llama-3.3-70b"}])
    add_provider(emulator, "nvidia", ["ok"], [{"model_id": "meta/llama-3.3-70b-instruct", "canonical": "llama-3.3-70b"}])
    add_provider(emulator, "other", ["ok"], ["solo"])
    add_chain("auto", ["groq/llama-3.3-70b-versatile", "nvidia/meta/llama-3.3-70b-instruct"])

    resp = _chat(gateway, "llama-3.3-70b")
    assert resp.headers["X-FreeLLM-Provider"] == "nvidia"  # groq first (chain rank), its 429 failed over
    assert resp.headers["X-FreeLLM-Trail"].startswith("groq/llama-3.3-70b-versatile/groq-0 -> rate_limited")
    listed = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {gateway.api_key}"}).json()
    ids = [entry["id"] for entry in listed["data"]]
    assert ids.count("llama-3.3-70b") == 1 and "groq/llama-3.3-70b-versatile" not in ids and "other/solo" in ids
    entry = next(e for e in listed["data"] if e["id"] == "llama-3.3-70b")
    assert entry["providers"] == ["groq/llama-3.3-70b-versatile", "nvidia/meta/llama-3.3-70b-instruct"]
