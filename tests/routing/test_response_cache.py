"""The response cache through the gateway: a deterministic request asked again is answered without an upstream
call, per user unless the chain shares, skipped on request, for chat and embeddings, replayed to streams."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle


def _cached_chain(emulator, *, ttl: int = 60, shared: bool = False, name: str = "auto"):
    add_provider(emulator, "groq", ["ok"], ["llama"])
    chain = add_chain(name, ["groq/llama"])
    chain.cache_ttl, chain.cache_shared = ttl, shared
    chain.save()


def _chat(gw, *, key: str | None = None, headers: dict | None = None, model: str = "auto", **params):
    body = {"model": model, "messages": [{"role": "user", "content": "what is 2+2?"}], "temperature": 0, **params}
    resp = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key or gw.api_key}", **(headers or {})})
    assert resp.status_code == 200, resp.text
    return resp


def _other_key(django_user_model, name: str = "bob") -> str:
    from routing.services import api_key_create

    user = django_user_model.objects.create_user(name, password="x")
    return api_key_create(user=user, name="test")[1]


def _upstream_calls(emulator) -> int:
    return len(emulator.calls_for(provider="groq"))


def test_the_second_identical_request_is_a_hit_without_an_upstream_call(gateway, emulator):
    from analytics.models import RequestLog

    _cached_chain(emulator)
    first = _chat(gateway)
    assert first.headers["X-FreeLLM-Cache"] == "miss"
    second = _chat(gateway)
    assert second.headers["X-FreeLLM-Cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    assert second.headers["X-FreeLLM-Provider"] == "groq"
    assert second.headers["X-FreeLLM-Attempts"] == "0"
    assert _upstream_calls(emulator) == 1
    # A model alias of the same chain (a strategy suffix) asks the same thing.
    assert _chat(gateway, model="auto:fast").headers["X-FreeLLM-Cache"] == "hit"
    assert _upstream_calls(emulator) == 1

    wait_until_idle()
    outcomes = list(RequestLog.objects.order_by("created_at").values_list("outcome", "prompt_tokens"))
    assert [o for o, _ in outcomes] == ["ok", "cache_hit", "cache_hit"]
    assert outcomes[1][1] == 0  # a hit spent nothing


def test_a_hit_costs_no_quota(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], [{"model_id": "llama", "rpd": 1}])
    chain = add_chain("auto", ["groq/llama"])
    chain.cache_ttl = 60
    chain.save()
    _chat(gateway)
    # The one request a day is spent; the same question is still answered, from the cache.
    for _ in range(3):
        assert _chat(gateway).headers["X-FreeLLM-Cache"] == "hit"
    other = httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                       headers={"Authorization": f"Bearer {gateway.api_key}"},
                       json={"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "new"}]})
    assert other.status_code == 429


def test_another_user_misses_unless_the_chain_shares(gateway, emulator, django_user_model):
    _cached_chain(emulator)
    bob = _other_key(django_user_model)
    _chat(gateway)
    assert _chat(gateway, key=bob).headers["X-FreeLLM-Cache"] == "miss"
    assert _upstream_calls(emulator) == 2
    assert _chat(gateway, key=bob).headers["X-FreeLLM-Cache"] == "hit"


def test_a_shared_chain_serves_every_user_from_one_entry(gateway, emulator, django_user_model):
    _cached_chain(emulator, shared=True)
    bob = _other_key(django_user_model)
    _chat(gateway)
    assert _chat(gateway, key=bob).headers["X-FreeLLM-Cache"] == "hit"
    assert _upstream_calls(emulator) == 1


def test_no_store_skips_the_cache(gateway, emulator):
    _cached_chain(emulator)
    _chat(gateway)
    bypass = _chat(gateway, headers={"X-FreeLLM-Cache": "no-store"})
    assert "X-FreeLLM-Cache" not in bypass.headers
    assert _upstream_calls(emulator) == 2


@pytest.mark.parametrize("params", [{"temperature": 0.7}, {"temperature": None}])
def test_sampled_requests_are_never_cached(gateway, emulator, params):
    _cached_chain(emulator)
    for _ in range(2):
        resp = _chat(gateway, **params) if params["temperature"] is not None else httpx.post(
            f"{gateway.base_url}/chat/completions", timeout=30, headers={"Authorization": f"Bearer {gateway.api_key}"},
            json={"model": "auto", "messages": [{"role": "user", "content": "what is 2+2?"}]})
        assert "X-FreeLLM-Cache" not in resp.headers
    assert _upstream_calls(emulator) == 2


def test_a_seed_makes_a_request_cacheable_and_parameters_tell_requests_apart(gateway, emulator):
    _cached_chain(emulator)
    _chat(gateway, temperature=0.9, seed=7)
    assert _chat(gateway, temperature=0.9, seed=7).headers["X-FreeLLM-Cache"] == "hit"
    assert _chat(gateway, temperature=0.9, seed=8).headers["X-FreeLLM-Cache"] == "miss"
    assert _chat(gateway, max_tokens=5).headers["X-FreeLLM-Cache"] == "miss"
    assert _upstream_calls(emulator) == 3


def test_a_chain_without_cache_ttl_is_not_cached(gateway, emulator):
    _cached_chain(emulator, ttl=0)
    assert "X-FreeLLM-Cache" not in _chat(gateway).headers
    _chat(gateway)
    assert _upstream_calls(emulator) == 2


def test_streams_replay_a_cached_answer_only_when_asked(gateway, emulator):
    _cached_chain(emulator)
    client = gateway.openai()
    plain = client.chat.completions.create(model="auto", temperature=0,
                                           messages=[{"role": "user", "content": "what is 2+2?"}])
    text = plain.choices[0].message.content

    def streamed(headers):
        with client.chat.completions.with_streaming_response.create(
                model="auto", temperature=0, stream=True, extra_headers=headers,
                messages=[{"role": "user", "content": "what is 2+2?"}]) as resp:
            content = "".join(chunk.choices[0].delta.content or "" for chunk in resp.parse() if chunk.choices)
            return content, resp.headers.get("X-FreeLLM-Cache")

    assert streamed({}) == (text, None)  # a stream goes upstream unless it asks for a replay
    assert _upstream_calls(emulator) == 2
    assert streamed({"X-FreeLLM-Cache": "replay"}) == (text, "hit")
    assert _upstream_calls(emulator) == 2


def test_embeddings_are_cached(gateway, emulator):
    add_provider(emulator, "cohere", ["ok"], [{"model_id": "embed", "kind": "embedding", "family": "embed-v1"}])
    chain = add_chain("vectors", ["cohere/embed"], kind="embedding")
    chain.cache_ttl = 60
    chain.save()
    client = gateway.openai()
    first = client.embeddings.with_raw_response.create(model="vectors", input=["hello"])
    second = client.embeddings.with_raw_response.create(model="vectors", input=["hello"])
    assert (first.headers["X-FreeLLM-Cache"], second.headers["X-FreeLLM-Cache"]) == ("miss", "hit")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    assert len(emulator.calls_for(provider="cohere")) == 1
    other = client.embeddings.with_raw_response.create(model="vectors", input=["bye"])
    assert other.headers["X-FreeLLM-Cache"] == "miss"


def test_redis_shares_entries_and_an_outage_is_a_miss(redis_url):
    import asyncio

    from routing.cache import RedisResponseCache

    async def run():
        await RedisResponseCache(redis_url).set("freellm:c:k", {"answer": {"a": 1}, "served": "g/m"}, 30)
        shared = await RedisResponseCache(redis_url).get("freellm:c:k")  # another process
        down = RedisResponseCache("redis://127.0.0.1:1/0")  # nothing listens there
        await down.set("freellm:c:k", {"answer": {}}, 30)
        return shared, await down.get("freellm:c:k"), down.breaker.degraded

    shared, missed, degraded = asyncio.run(run())
    assert shared == {"answer": {"a": 1}, "served": "g/m"}
    assert missed is None and degraded


def test_the_local_cache_is_bounded_and_entries_expire(monkeypatch):
    import asyncio

    from routing import cache

    clock = [1000.0]
    monkeypatch.setattr(cache.time, "monotonic", lambda: clock[0])

    async def run():
        local = cache.LocalResponseCache(2)
        await local.set("a", {"v": 1}, ttl=10)
        await local.set("b", {"v": 2}, ttl=100)
        await local.set("c", {"v": 3}, ttl=100)  # past the bound: the least recently used goes
        evicted = await local.get("a")
        clock[0] += 50
        return evicted, await local.get("b"), await local.get("c")

    assert asyncio.run(run()) == (None, {"v": 2}, {"v": 3})


def test_the_key_is_the_normalised_request():
    from routing.cache import cache_key, deterministic

    body = {"model": "auto:fast", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "top_p": 1}
    same = {"top_p": 1, "temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "auto",
            "stream": True}
    assert cache_key(kind="chat", chain="auto", body=body, scope="u1") == \
        cache_key(kind="chat", chain="auto", body=same, scope="u1")
    assert cache_key(kind="chat", chain="auto", body=body, scope="u1") != \
        cache_key(kind="chat", chain="auto", body=body, scope="u2")
    assert deterministic({"temperature": 0}) and deterministic({"seed": 1, "temperature": 1})
    assert not deterministic({}) and not deterministic({"temperature": 0.2}) and not deterministic({"temperature": False})


def test_every_dialect_shares_the_cache_ollama_and_gemini(gateway, emulator):
    """The cache sits in the exchange: an Ollama client's repeat is a hit, and so is a Gemini client's."""
    import ollama
    from google import genai
    from google.genai import types

    _cached_chain(emulator)
    client = ollama.Client(host=gateway.url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=30)
    ask = {"model": "auto", "messages": [{"role": "user", "content": "what is 2+2?"}], "options": {"temperature": 0}}
    first = client.chat(**ask)
    second = client.chat(**ask)
    assert second.message.content == first.message.content
    assert _upstream_calls(emulator) == 1

    gemini = genai.Client(api_key=gateway.api_key, http_options=types.HttpOptions(
        base_url=gateway.url, api_version="v1beta"))
    config = types.GenerateContentConfig(temperature=0)
    answers = [gemini.models.generate_content(model="auto", contents="what is 2+2?", config=config).text
               for _ in range(2)]
    assert answers == [first.message.content] * 2
    # Gemini's request is another internal body (its own parameters): one call for it, then its hit.
    assert _upstream_calls(emulator) == 2


def test_a_cached_answer_is_no_way_around_a_keys_allowed_models(gateway, emulator, django_user_model):
    from routing.models import ApiKey

    _cached_chain(emulator, shared=True)
    bob = _other_key(django_user_model)
    ApiKey.objects.filter(user__username="bob").update(allowed_models="other-chain")
    _chat(gateway)  # alice fills the shared entry
    resp = httpx.post(f"{gateway.base_url}/chat/completions", timeout=30, headers={"Authorization": f"Bearer {bob}"},
                      json={"model": "auto", "messages": [{"role": "user", "content": "what is 2+2?"}],
                            "temperature": 0})
    assert resp.status_code == 403 and resp.json()["error"]["type"] == "permission_error"
    assert _upstream_calls(emulator) == 1
