from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings

pytest_plugins = ["tests.fixtures_emulator", "tests.fixtures_gateway", "tests.fixtures_processes", "tests.fixtures_quota", "tests.fixtures_foundation", "tests.fixtures_team",
                  "tests.fixtures_analytics"]

# The emulator and test gateways listen on loopback, which the SSRF guard refuses by default. Django is set
# up before this file is read, so the setting is set here too; the environment carries it to the gateway
# processes tests start.
EMULATOR_ALLOW = "127.0.0.1/32,::1/128,localhost"
os.environ["FREELLM_UPSTREAM_ALLOW"] = EMULATOR_ALLOW
settings.FREELLM_UPSTREAM_ALLOW = EMULATOR_ALLOW

REQUIRE_SERVICES = os.environ.get("FREELLM_REQUIRE_SERVICES", "").lower() in ("1", "true", "yes")


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _fresh_auth_throttle():
    """Every test sends its wrong API keys from 127.0.0.1: counts left by earlier tests must not throttle it."""
    from routing.throttle import auth_throttle_reset

    auth_throttle_reset()


def need_service(name: str, url: str, default_port: int) -> None:
    """Skip (or, in CI, fail) a test whose real service is not reachable."""
    if _reachable(url, default_port):
        return
    message = f"{name} is not reachable at {url}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (FREELLM_REQUIRE_SERVICES is set: CI must test against the real server)")
    pytest.skip(f"{message}; start it to run this test")


@pytest.fixture
def redis_url() -> str:
    """A real Redis on a database of its own (FREELLM_TEST_REDIS_DB, default 15), emptied before each test."""
    base = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    need_service("Redis", base, 6379)
    db = os.environ.get("FREELLM_TEST_REDIS_DB", "15")
    url = f"{base.rsplit('/', 1)[0]}/{db}" if urlparse(base).path not in ("", "/") else f"{base.rstrip('/')}/{db}"
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        url = "postgres://postgres@127.0.0.1:5432/postgres"
    need_service("PostgreSQL", url, 5432)
    return url
