"""Redis goes away mid-traffic: the quota store keeps serving on local state and goes back when it returns."""

from __future__ import annotations

import logging

from routing.quota.base import Lease, Limits, Route
from routing.quota.local import LocalQuotaStore
from routing.quota.redis import PREFIX, RedisQuotaStore
from routing.quota.resilient import ResilientQuotaStore
from tests.fixtures_quota import Clock


async def test_redis_outage_mid_run_falls_back_and_recovers(throwaway_redis, caplog):
    wall = Clock(1_800_000_000.5)
    retry_clock = Clock(0.0)
    store = ResilientQuotaStore(
        RedisQuotaStore(throwaway_redis.url, lease_ttl=120, now=wall),
        LocalQuotaStore(lease_ttl=120, now=wall),
        retry_interval=5.0,
        clock=retry_clock,
    )
    route = Route("groq", "llama", "k1", Limits(rpm=100, tpm=100_000))

    before = await store.reserve(route, 100)
    assert isinstance(before, Lease) and throwaway_redis.exists(f"{PREFIX}lease:{before.id}")
    assert not store.degraded

    throwaway_redis.kill()
    caplog.set_level(logging.WARNING, logger="routing.quota.resilient")
    during = []
    for _ in range(5):
        lease = await store.reserve(route, 50)
        assert isinstance(lease, Lease)
        during.append(lease)
        await store.record(route, None, headers={"x-ratelimit-limit-tokens": "90000"})
        assert (await store.status(route)).used["rpm"] >= 1
        assert 0 < await store.headroom(route) <= 1
    assert store.degraded and "ConnectionError" in store.last_error
    assert all(store.fallback.owns(lease) for lease in during)
    # A lease Redis handed out before the outage can still be settled: no exception, nothing to do.
    await store.settle(before, 10)
    await store.clear_cooldown(route)
    outage_warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(outage_warnings) == 1

    throwaway_redis.start()
    # Not retried before the interval is up...
    retry_clock.advance(4)
    lease = await store.reserve(route, 50)
    assert store.fallback.owns(lease) and store.degraded
    # ...then Redis is used again, and leases of the outage still settle locally.
    retry_clock.advance(2)
    back = await store.reserve(route, 50)
    assert isinstance(back, Lease) and throwaway_redis.exists(f"{PREFIX}lease:{back.id}")
    assert not store.degraded
    await store.settle(during[0], 0)
    assert (await store.fallback.status(route)).used["tpm"] == 4 * 50 + 50
    await store.settle(back, 7)
    assert (await store.status(route)).used["tpm"] == 7
    assert any("Redis is back" in r.getMessage() for r in caplog.records)
    await store.primary.aclose()


async def test_get_quota_store_picks_the_backend(settings, redis_url):
    from routing.quota import build_quota_store

    settings.REDIS_URL = ""
    assert isinstance(build_quota_store(), LocalQuotaStore)
    store = build_quota_store(redis_url)
    assert isinstance(store, ResilientQuotaStore) and isinstance(store.primary, RedisQuotaStore)
    assert isinstance(await store.reserve(Route("p", "m", "k"), 1), Lease) and not store.degraded
    await store.primary.aclose()
