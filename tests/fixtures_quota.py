"""Quota-store fixtures: the same tests run on the in-process and the Redis backend, on a test clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest


class Clock:
    """Wall-clock stand-in the stores read through their ``now`` callable."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()


LEASE_TTL = 120.0


@pytest.fixture
def clock() -> Clock:
    # Half a second into a minute, mid-morning UTC: far from any day boundary unless a test moves it.
    return Clock(datetime(2026, 11, 24, 10, 0, 0, 500000, tzinfo=UTC).timestamp())


@pytest.fixture(params=["local", "redis"])
async def quota_store(request, clock):
    """A fresh store of each backend; ``quota_store.backend`` says which."""
    from routing.quota.local import LocalQuotaStore
    from routing.quota.redis import RedisQuotaStore

    if request.param == "local":
        yield LocalQuotaStore(lease_ttl=LEASE_TTL, now=clock)
        return
    url = request.getfixturevalue("redis_url")
    store = RedisQuotaStore(url, lease_ttl=LEASE_TTL, now=clock)
    yield store
    await store.aclose()
