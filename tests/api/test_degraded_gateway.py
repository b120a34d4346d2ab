"""The whole gateway while Redis is unreachable (found by tests/soak_production.py): requests are served
on local state, never a 500. The quota store alone is tested in test_quota_degraded.py."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider


def _dead_redis_url() -> str:
    # A port nobody listens on: every connection is refused, as when the Redis server has died.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def redis_down(settings):
    """Settings that point every Redis user (config version, quota store, sessions) at a dead server."""
    from routing.config import invalidate_local_config
    from routing.quota import set_quota_store
    from routing.sessions import reset_session_store

    url = _dead_redis_url()
    settings.REDIS_URL = url
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    set_quota_store(None)
    reset_session_store()
    invalidate_local_config()
    yield url
    set_quota_store(None)
    reset_session_store()
    invalidate_local_config()


def chat(gateway, content: str = "hello") -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "messages": [{"role": "user", "content": content}]})


def test_requests_are_served_while_redis_is_unreachable(gateway, emulator, redis_down):
    # The key that answers 401 is marked invalid, which bumps the config version: in Redis, unreachable.
    add_provider(emulator, "groq", ["bad;401"], ["llama"])
    add_provider(emulator, "cerebras", ["good"], ["qwen"])
    add_chain("auto", ["groq/llama", "cerebras/qwen"])

    first = chat(gateway)
    second = chat(gateway, "again")

    assert first.status_code == 200, first.text
    assert first.headers["X-FreeLLM-Trail"] == "groq/llama/groq-0 -> auth, cerebras/qwen/cerebras-0 -> ok"
    assert second.status_code == 200, second.text
    # The invalid key left this process's routing config although the version could not be bumped.
    assert second.headers["X-FreeLLM-Trail"] == "cerebras/qwen/cerebras-0 -> ok"
    models = httpx.get(f"{gateway.base_url}/models", params={"available": "true"}, timeout=30,
                       headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert models.status_code == 200
    assert "auto" in [m["id"] for m in models.json()["data"]]


def test_routing_config_keeps_its_snapshot_until_the_version_can_be_read(transactional_db, redis_down, emulator):
    from asgiref.sync import async_to_sync

    from routing.config import UNKNOWN_VERSION, get_routing_config, invalidate_local_config

    add_provider(emulator, "groq", ["good"], ["llama"])
    cfg = async_to_sync(get_routing_config)()
    assert cfg.version == UNKNOWN_VERSION
    assert "groq/llama" in cfg.by_name
    invalidate_local_config()
    # A process that starts during the outage still gets a config from the database.
    assert "groq/llama" in async_to_sync(get_routing_config)().by_name


def test_a_change_made_while_redis_was_down_is_announced_when_it_answers_again(settings, redis_url, transactional_db):
    from asgiref.sync import async_to_sync

    from routing.config import bump_config_version, current_config_version, get_routing_config

    shared_version = async_to_sync(current_config_version)

    def use(url: str) -> None:
        settings.REDIS_URL = url
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}

    use(redis_url)
    bump_config_version()
    before = shared_version()
    use(_dead_redis_url())
    bump_config_version()  # an admin edit during the outage: saved, but not announced

    use(redis_url)  # Redis is back with its data: the other processes still see the old version
    assert shared_version() == before
    async_to_sync(get_routing_config)()  # this process's next request announces it
    assert shared_version() not in (before, None)
