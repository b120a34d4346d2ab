"""How gateway processes learn that the routing config changed: the shared version, read once a second."""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest
import redis

from routing import config


@pytest.fixture
def shared_redis(settings, redis_url):
    settings.REDIS_URL = redis_url
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    config.invalidate_local_config()
    yield redis.Redis.from_url(redis_url)
    config.invalidate_local_config()


@pytest.mark.django_db(transaction=True)
async def test_a_bump_is_read_back_by_the_event_loop_reader(shared_redis):
    before = await config.current_config_version()

    await asyncio.to_thread(config.bump_config_version)

    after = await config.current_config_version()
    assert after not in (before, None) and after.isdigit()


@pytest.mark.django_db(transaction=True)
async def test_requests_in_flight_when_the_interval_ends_make_one_check(shared_redis, monkeypatch):
    first = await config.get_routing_config()
    reads = 0
    read = config.current_config_version

    async def counted():
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)  # a check that takes a while, as under load
        return await read()

    monkeypatch.setattr(config, "current_config_version", counted)
    config._state.checked_at -= config.CHECK_INTERVAL

    configs = await asyncio.gather(*(config.get_routing_config() for _ in range(50)))

    assert reads == 1
    assert all(cfg is first for cfg in configs)


@pytest.mark.django_db(transaction=True)
async def test_a_version_an_earlier_release_pickled_still_reads(shared_redis):
    from django.core.cache import cache

    shared_redis.set(cache.make_key(config._CACHE_KEY), pickle.dumps("1700000000000000000"))

    assert await config.current_config_version() == "pickled"
    await asyncio.to_thread(config.bump_config_version)
    assert (await config.current_config_version()).isdigit()


@pytest.mark.django_db(transaction=True)
async def test_requests_without_a_snapshot_share_one_load(shared_redis, monkeypatch):
    # A process that starts under load: every request in flight finds no config yet.
    loads = 0
    load = config.load_routing_config

    def counted(version):
        nonlocal loads
        loads += 1
        time.sleep(0.05)  # a database under load
        return load(version)

    monkeypatch.setattr(config, "load_routing_config", counted)

    configs = await asyncio.gather(*(config.get_routing_config() for _ in range(30)))

    assert loads == 1
    assert all(cfg is configs[0] for cfg in configs)
