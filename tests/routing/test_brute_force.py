"""Brute force: the admin login locks out after a few wrong passwords; wrong API keys are throttled per
client address (429 with Retry-After), across gateway processes when Redis is shared."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from django.test import Client

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.django_db
def test_the_admin_login_locks_out_after_repeated_wrong_passwords(django_user_model, settings):
    settings.AXES_FAILURE_LIMIT = 5
    django_user_model.objects.create_superuser("root", password="right-password-1")
    client = Client()

    for _ in range(5):
        resp = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "wrong"})
    assert resp.status_code == 429

    resp = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "right-password-1"})
    assert resp.status_code == 429
    page = resp.content.decode()
    assert "Login locked" in page and "Too many failed login attempts" in page
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_right_password_after_a_few_wrong_ones_still_logs_in(django_user_model, settings):
    settings.AXES_FAILURE_LIMIT = 5
    django_user_model.objects.create_superuser("root", password="right-password-1")
    client = Client()
    for _ in range(3):
        client.post("/admin/login/?next=/admin/", {"username": "root", "password": "wrong"})

    resp = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "right-password-1"})

    assert resp.status_code == 302 and "_auth_user_id" in client.session


def _post(url: str, key: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=CHAT)


def test_wrong_api_keys_from_one_address_are_throttled_with_retry_after(gateway, emulator, settings):
    from tests.fixtures_gateway import add_chain, add_provider

    settings.FREELLM_AUTH_FAILURE_LIMIT = 3
    settings.FREELLM_AUTH_FAILURE_WINDOW = 600
    add_provider(emulator, "groq", ["k"], ["llama"])
    add_chain("auto", ["groq/llama"])
    # A key already in use from this address keeps working while the address is throttled.
    assert _post(gateway.url, gateway.api_key).status_code == 200

    statuses = [_post(gateway.url, f"fl-wrong-{i}").status_code for i in range(3)]
    throttled = _post(gateway.url, "fl-wrong-last")

    assert statuses == [401, 401, 401]
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "too_many_auth_failures"
    assert 0 < int(throttled.headers["Retry-After"]) <= 600
    assert _post(gateway.url, gateway.api_key).status_code == 200


def test_failures_are_counted_across_gateway_processes_through_redis(gateway_processes, django_user_model):
    import os

    os.environ["FREELLM_AUTH_FAILURE_LIMIT"] = "4"
    try:
        first, second = gateway_processes(2)
    finally:
        del os.environ["FREELLM_AUTH_FAILURE_LIMIT"]

    statuses = [_post(gw.url, f"fl-wrong-{i}").status_code for i, gw in enumerate([first, second] * 2)]

    assert statuses == [401, 401, 401, 401]
    assert _post(first.url, "fl-wrong-x").status_code == 429
    assert _post(second.url, "fl-wrong-y").status_code == 429


def test_a_burst_of_wrong_keys_leaves_no_redis_connections_behind(gateway_processes, redis_url):
    # Counted through the gateway's pooled Redis client: Django's cache, which counted them before, opened a
    # Redis connection for each request in flight and kept it open, so a burst of wrong keys (an attacker's,
    # or a misconfigured tool's retries) grew the gateway's connections without bound.
    import redis

    (gw,) = gateway_processes(1)
    server = redis.Redis.from_url(redis_url)

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            replies = await asyncio.gather(*(
                client.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer fl-wrong-{i}"},
                            json=CHAT) for i in range(n)))
        return [r.status_code for r in replies]

    asyncio.run(burst(60))  # the pool grows to what 60 requests in flight need
    before = len(server.client_list())
    statuses = asyncio.run(burst(60))

    assert set(statuses) <= {401, 429} and 429 in statuses
    # The second burst reuses the pool (before: 60 more connections, never closed).
    assert len(server.client_list()) - before < 10


async def test_wrong_keys_sent_at_once_are_each_counted(redis_url, settings):
    # Through Django's cache (add, then incr, each in a thread), 30 failures recorded at once counted 1: a
    # client that sent its guesses concurrently was never throttled.
    from types import SimpleNamespace

    from routing.throttle import _failures, _window, auth_failure_record

    settings.REDIS_URL = redis_url
    settings.FREELLM_AUTH_FAILURE_WINDOW = 3600  # no window ends during the test
    request = SimpleNamespace(META={"REMOTE_ADDR": "203.0.113.7"})
    window, _ = _window()

    await asyncio.gather(*(auth_failure_record(request) for _ in range(30)))

    assert await _failures("203.0.113.7", window) == 30
