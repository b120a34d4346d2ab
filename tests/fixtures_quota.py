"""Quota-store fixtures: the same tests run on the in-process and the Redis backend, on a test clock."""

from __future__ import annotations

import shutil
import socket
import subprocess
from datetime import UTC, datetime

import pytest
import redis

from tests.polling import wait_until


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayRedis:
    """A redis-server of our own (no persistence) that the test can kill and bring back on the same port."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        if not wait_until(answers, timeout=10, interval=0.05):
            raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def exists(self, key: str) -> bool:
        return bool(redis.Redis(port=self.port).exists(key))


@pytest.fixture
def throwaway_redis():
    server = ThrowawayRedis()
    server.start()
    yield server
    server.kill()
