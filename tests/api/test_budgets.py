"""Budgets per API key and per user, and allowed chains/models: through the official openai client, one gateway
and two gateway processes sharing Redis."""

from __future__ import annotations

import concurrent.futures

import httpx
import openai
import pytest
from django.core.management import call_command

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def configured(gateway, emulator):
    add_provider(emulator, "groq", ["good"], ["llama", "mixtral"])
    add_provider(emulator, "cerebras", ["good"], ["llama"])
    add_chain("fast", ["groq/llama"])
    add_chain("smart", ["groq/mixtral"])
    return gateway


def _key(user: str = "alice", **budget) -> str:
    from django.contrib.auth import get_user_model

    from routing.services import api_key_create

    owner, _ = get_user_model().objects.get_or_create(username=user)
    _, raw = api_key_create(user=owner, name="budgeted", **budget)
    return raw


def _client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def _chat(client, model: str = "fast"):
    return client.chat.completions.create(model=model, messages=HI)


def test_a_key_over_its_rpm_gets_429_naming_the_limit_with_retry_after(configured):
    client = _client(configured, _key(rpm=2))
    _chat(client)
    _chat(client)
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(client)
    err = caught.value
    assert err.status_code == 429
    assert "this key allows 2 requests per minute" in err.message
    assert err.body["code"] == "budget_exceeded" and err.body["type"] == "rate_limit_error"
    assert 1 <= int(err.response.headers["Retry-After"]) <= 61
    # Another key of the same user has no limit of its own.
    _chat(_client(configured, configured.api_key))


def test_the_users_budget_applies_across_all_their_keys(configured):
    from django.contrib.auth import get_user_model

    from routing.services import user_budget_set

    alice = get_user_model().objects.get(username="alice")
    user_budget_set(user=alice, rpd=3)
    first, second = _client(configured, configured.api_key), _client(configured, _key(rpm=100))
    _chat(first)
    _chat(second)
    _chat(first)
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(second)
    assert "the user alice allows 3 requests per day" in caught.value.message
    # Another user is not affected.
    _chat(_client(configured, _key("bob")))


def test_tokens_per_day_are_settled_with_the_real_usage(configured):
    from routing.budgets import KEY_PROVIDER, budget_route
    from routing.models import ApiKey, hash_api_key
    from routing.quota import get_quota_store

    raw = _key(tpd=100_000)
    client = _client(configured, raw)
    answer = _chat(client)
    wait_until_idle()
    key = ApiKey.objects.select_related("user").get(key_hash=hash_api_key(raw))
    from asgiref.sync import async_to_sync

    status = async_to_sync(get_quota_store().status)(budget_route(KEY_PROVIDER, key.id, key))
    # The reservation (prompt estimate + FREELLM_OUTPUT_RESERVE) was replaced by what the answer used.
    assert status.used["tpd"] == answer.usage.total_tokens
    assert status.used["rpd"] == 1


def test_a_request_bigger_than_the_token_budget_is_refused(configured):
    client = _client(configured, _key(tpd=50))
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(client)
    assert "this key allows 50 tokens per day and this request needs about" in caught.value.message


def test_allowed_chains_and_patterns(configured):
    client = _client(configured, _key(allowed_models=["fast", "cerebras/*"]))
    assert _chat(client, "fast").choices[0].message.content
    assert _chat(client, "cerebras/llama").choices[0].message.content
    assert _chat(client, "fast:reliable").choices[0].message.content  # the chain, with a strategy
    for refused in ("smart", "groq/mixtral"):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            _chat(client, refused)
        assert caught.value.status_code == 403
        assert caught.value.body["type"] == "permission_error"
        assert caught.value.body["code"] == "model_not_allowed"
        assert f"this key may not use '{refused}'; it may use only: fast, cerebras/*" == caught.value.body["message"]
    # A bare id served by two providers goes only to the allowed one.
    resp = httpx.post(f"{configured.base_url}/chat/completions", headers={"Authorization": f"Bearer {client.api_key}"},
                      json={"model": "llama", "messages": HI}, timeout=30)
    assert resp.status_code == 200 and resp.headers["X-FreeLLM-Provider"] == "cerebras"
    assert "groq" not in resp.headers["X-FreeLLM-Trail"]


def test_the_users_allowed_list_applies_with_the_keys(configured):
    from django.contrib.auth import get_user_model

    from routing.services import user_budget_set

    user_budget_set(user=get_user_model().objects.get(username="alice"), allowed_models=["smart"])
    client = _client(configured, _key(allowed_models=["fast", "smart"]))
    _chat(client, "smart")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _chat(client, "fast")
    assert "the user alice may not use 'fast'; it may use only: smart" == caught.value.body["message"]


def test_embeddings_count_against_the_budget_too(gateway, emulator):
    add_provider(emulator, "mistral", ["good"], [{"model_id": "embed", "kind": "embedding", "family": "m"}])
    client = _client(gateway, _key(rpm=1))
    client.embeddings.create(model="mistral/embed", input="hello")
    with pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(model="mistral/embed", input="hello")
    assert "this key allows 1 requests per minute" in caught.value.message


def test_a_request_no_provider_could_take_gives_its_reservation_back(configured):
    from providers.models import ProviderKey

    client = _client(configured, _key(rpm=1))
    ProviderKey.objects.filter(provider__slug="groq").update(enabled=False)
    from routing.config import bump_config_version

    bump_config_version()
    with pytest.raises(openai.APIStatusError) as caught:
        _chat(client)
    assert caught.value.status_code == 503  # no usable upstream: not the client's fault
    ProviderKey.objects.filter(provider__slug="groq").update(enabled=True)
    bump_config_version()
    _chat(client)  # the one request a minute is still there


def test_create_api_key_command_sets_the_budget(configured, capsys):
    call_command("create_api_key", "--user", "alice", "--name", "ci", "--rpm", "1", "--rpd", "10", "--tpd", "5000",
                 "--chains", "fast, groq/*")
    raw = capsys.readouterr().out.strip()
    from routing.models import ApiKey

    key = ApiKey.objects.get(name="ci")
    assert (key.rpm, key.rpd, key.tpd, key.allowed_patterns) == (1, 10, 5000, ("fast", "groq/*"))
    client = _client(configured, raw)
    _chat(client)
    with pytest.raises(openai.PermissionDeniedError):
        _chat(client, "cerebras/llama")  # refused before its budget is counted
    with pytest.raises(openai.RateLimitError):
        _chat(client)
    # The old form still works.
    call_command("create_api_key", "--user", "alice")
    assert ApiKey.objects.filter(name="default", rpm__isnull=True).exists()


def test_budgets_hold_across_two_gateway_processes(gateway_processes, emulator, django_user_model):
    add_provider(emulator, "groq", ["good"], ["llama"])
    add_chain("fast", ["groq/llama"])
    raw = _key("carol", rpm=5)
    first, second = gateway_processes(2)

    def one(i: int) -> int:
        gw = (first, second)[i % 2]
        return httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {raw}"},
                          json={"model": "fast", "messages": HI}, timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(16)))
    assert statuses.count(200) == 5 and statuses.count(429) == 11, statuses


def test_the_dashboard_shows_usage_against_each_limit(configured, staff_user, member_user):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from routing.services import api_key_create, user_budget_set

    _, raw = api_key_create(user=member_user, name="laptop", rpm=5, tpd=90_000)
    user_budget_set(user=member_user, rpd=40, allowed_models=["fast"])
    user_budget_set(user=get_user_model().objects.get(username="alice"), rpd=7)
    client = _client(configured, raw)
    _chat(client)
    _chat(client)
    wait_until_idle()

    def page(user) -> str:
        browser = Client()
        browser.force_login(user)
        return browser.get("/admin/analytics/requestlog/dashboard/").content.decode()

    mine = page(member_user)
    assert "key mia-member/laptop" in mine and "2 / 5 rpm" in mine and "2 / 40 rpd" in mine
    assert "user alice" not in mine  # someone else's
    everyone = page(staff_user)
    assert "user mia-member" in everyone and "0 / 7 rpd" in everyone and "2 / 5 rpm" in everyone


def test_budgets_hold_on_local_state_while_redis_is_down(configured):
    import socket

    from routing.quota import set_quota_store
    from routing.quota.local import LocalQuotaStore
    from routing.quota.redis import RedisQuotaStore
    from routing.quota.resilient import ResilientQuotaStore

    with socket.socket() as s:  # a port nobody listens on: the Redis server has died
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    store = ResilientQuotaStore(RedisQuotaStore(dead), LocalQuotaStore())
    set_quota_store(store)
    try:
        client = _client(configured, _key(rpm=2))
        _chat(client)
        _chat(client)
        with pytest.raises(openai.RateLimitError) as caught:
            _chat(client)
        assert "this key allows 2 requests per minute" in caught.value.message
        assert store.degraded
    finally:
        set_quota_store(None)


def test_models_lists_only_what_the_key_may_use(configured):
    client = _client(configured, _key(allowed_models=["fast", "cerebras/*"]))
    assert sorted(m.id for m in client.models.list()) == ["cerebras/llama", "fast"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("smart")
    assert len(list(_client(configured, configured.api_key).models.list())) == 5  # 2 chains, 3 models


def test_other_dialects_get_the_budget_errors_in_their_own_shape(configured):
    import ollama

    raw = _key(rpm=1, allowed_models=["fast"])
    responses = _client(configured, raw)
    assert responses.responses.create(model="fast", input="hi").output_text
    with pytest.raises(openai.RateLimitError) as caught:
        responses.responses.create(model="fast", input="hi")
    assert "this key allows 1 requests per minute" in caught.value.message

    native = ollama.Client(host=configured.url, headers={"Authorization": f"Bearer {raw}"}, timeout=30)
    with pytest.raises(ollama.ResponseError) as caught:
        native.chat(model="fast", messages=HI, stream=False)
    assert caught.value.status_code == 429 and "this key allows 1 requests per minute" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        native.chat(model="smart", messages=HI, stream=False)
    assert caught.value.status_code == 403 and "it may use only: fast" in caught.value.error


def test_the_keyless_ollama_user_is_held_to_their_budget(configured, settings):
    import ollama
    from django.contrib.auth import get_user_model

    from routing.services import user_budget_set

    settings.FREELLM_OLLAMA_KEYLESS_USER = "alice"
    user_budget_set(user=get_user_model().objects.get(username="alice"), rpm=1)
    native = ollama.Client(host=configured.url, timeout=30)  # no key: served as alice from this machine
    native.chat(model="fast", messages=HI, stream=False)
    with pytest.raises(ollama.ResponseError) as caught:
        native.chat(model="fast", messages=HI, stream=False)
    assert caught.value.status_code == 429 and "the user alice allows 1 requests per minute" in caught.value.error


def test_the_mcp_list_models_tool_shows_only_what_the_key_may_use(configured):
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    raw = _key(allowed_models=["fast", "cerebras/*"])

    async def listed() -> set[str]:
        async with (
            httpx.AsyncClient(headers={"Authorization": f"Bearer {raw}"}, timeout=30) as http,
            streamable_http_client(f"{configured.url}/mcp", http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("list_models", {})
        return {m["id"] for m in result.structuredContent["models"]}

    assert asyncio.run(listed()) == {"fast", "cerebras/llama"}


def test_the_anthropic_dialect_gets_its_own_429(configured):
    import anthropic

    raw = _key(rpm=1)
    client = anthropic.Anthropic(base_url=configured.url, api_key=raw, max_retries=0)
    client.messages.create(model="fast", max_tokens=20, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="fast", max_tokens=20, messages=HI)
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert "this key allows 1 requests per minute" in caught.value.body["error"]["message"]
    assert caught.value.response.headers["Retry-After"]
