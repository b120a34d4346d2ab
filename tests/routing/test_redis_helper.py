"""routing.redis: one client per event loop and URL, and the breaker every Redis user degrades through."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from django.test import override_settings

from routing.redis import RedisBreaker, redis_client, redis_client_close
from tests.fixtures_quota import Clock


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


async def test_one_client_per_loop_and_url(redis_url):
    first = redis_client(redis_url)
    assert redis_client(redis_url) is first
    assert await first.ping()
    base, _, db = redis_url.rpartition("/")
    other_db = f"{base}/{14 if db == '15' else 15}"
    assert redis_client(other_db) is not first

    # Another event loop (a thread's async_to_sync, a management command) gets a client of its own.
    def in_other_loop():
        async def grab():
            client = redis_client(redis_url)
            pong = await client.ping()
            await redis_client_close(redis_url)
            return client, pong

        return asyncio.run(grab())

    theirs, pong = await asyncio.to_thread(in_other_loop)
    assert pong and theirs is not first
    await redis_client_close(redis_url)
    await redis_client_close(other_db)
    assert redis_client(redis_url) is not first
    await redis_client_close(redis_url)


async def test_breaker_skips_redis_for_the_interval_and_announces_once(caplog):
    clock = Clock(0.0)
    log = logging.getLogger("tests.breaker")
    breaker = RedisBreaker(log=log, down="down (%(error)s)", back="back", retry_interval=5.0, clock=clock)
    calls: list[str] = []

    async def primary():
        calls.append("primary")
        if failing:
            raise ConnectionError("refused")
        return "redis"

    async def fallback():
        calls.append("fallback")
        return "local"

    failing = True
    with caplog.at_level(logging.INFO, logger="tests.breaker"):
        assert await breaker.call(primary, fallback) == "local"
        assert breaker.degraded and breaker.last_error == "ConnectionError: refused"
        clock.advance(4)
        assert await breaker.call(primary, fallback) == "local"
        assert calls == ["primary", "fallback", "fallback"]  # not retried inside the interval
        clock.advance(2)
        assert await breaker.call(primary, fallback) == "local"  # retried, still down: no second warning
        failing = False
        assert await breaker.call(primary, fallback) == "local"  # interval restarted at the last failure
        clock.advance(5)
        assert await breaker.call(primary, fallback) == "redis"
        assert await breaker.call(primary, fallback) == "redis"
    messages = [r.getMessage() for r in caplog.records if r.name == "tests.breaker"]
    assert messages == ["down (ConnectionError: refused)", "back"]
    assert not breaker.degraded and breaker.degraded_since is None


async def test_a_bug_is_not_an_outage():
    breaker = RedisBreaker(log=logging.getLogger("tests.breaker"), down="down", back="back")

    async def broken():
        raise KeyError("our bug")

    async def fallback():
        return "local"

    with pytest.raises(KeyError):
        await breaker.call(broken, fallback)
    assert not breaker.degraded


async def test_sessions_warn_once_per_outage(caplog):
    from routing.sessions import get_session_store, reset_session_store

    reset_session_store()
    try:
        with override_settings(REDIS_URL=_dead_url()), caplog.at_level(logging.WARNING, logger="routing.sessions"):
            for n in range(3):
                # New store objects per request, as the gateway makes them: the outage is remembered per URL.
                await get_session_store().set(f"k{n}", provider="groq", model="llama")
                assert (await get_session_store().get(f"k{n}")).model == "llama"
        warnings = [r for r in caplog.records if r.name == "routing.sessions"]
        assert len(warnings) == 1 and "in-process" in warnings[0].getMessage()
    finally:
        reset_session_store()


def test_config_version_warns_once_per_outage_and_once_when_back(settings, redis_url, caplog):
    from asgiref.sync import async_to_sync

    from routing.config import current_config_version, invalidate_local_config

    shared_version = async_to_sync(current_config_version)

    invalidate_local_config()
    dead = _dead_url()

    def use(url: str) -> None:
        settings.REDIS_URL = url
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}

    try:
        with caplog.at_level(logging.INFO, logger="routing.config"):
            use(dead)
            assert [shared_version() for _ in range(3)] == [None, None, None]
            use(redis_url)
            assert shared_version() is not None
            assert shared_version() is not None
        messages = [r.getMessage() for r in caplog.records if r.name == "routing.config"]
        assert len(messages) == 2
        assert "Redis unavailable" in messages[0] and "Redis is back" in messages[1]
    finally:
        invalidate_local_config()


async def test_a_burst_beyond_the_pool_waits_instead_of_failing(redis_url, settings):
    # 150 calls in flight at once (c=128 traffic did this): redis-py's default pool raised "Too many
    # connections" past 100, which the stores took for an outage. Then a cap of 2: the rest wait their turn.
    for cap, calls in ((settings.FREELLM_REDIS_MAX_CONNECTIONS, 150), (2, 10)):
        settings.FREELLM_REDIS_MAX_CONNECTIONS = cap
        await redis_client_close(redis_url)
        try:
            client = redis_client(redis_url)
            results = await asyncio.gather(*(client.blpop(f"freellm:test:none{i}", timeout=0.1) for i in range(calls)))
            assert results == [None] * calls
        finally:
            await redis_client_close(redis_url)
