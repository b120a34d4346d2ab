"""The process-wide quota store: Redis (shared by every gateway process) when REDIS_URL is set, wrapped
so that a Redis outage degrades to local state instead of failing requests; else the in-process store."""

from __future__ import annotations

from .base import QuotaStore

_store: QuotaStore | None = None
# Embedded mode: the worker's health probe revives a key through its database status only (see
# LocalQuotaStore); the gateway forgets its own auth-failure flag after this long.
EMBEDDED_KEY_INVALID_TTL = 600.0


def get_quota_store() -> QuotaStore:
    global _store
    if _store is None:
        _store = build_quota_store()
    return _store


def build_quota_store(redis_url: str | None = None) -> QuotaStore:
    from django.conf import settings

    from .local import LocalQuotaStore

    url = settings.REDIS_URL if redis_url is None else redis_url
    if not url:
        return LocalQuotaStore(key_invalid_ttl=EMBEDDED_KEY_INVALID_TTL)
    from .redis import RedisQuotaStore
    from .resilient import ResilientQuotaStore

    return ResilientQuotaStore(RedisQuotaStore(url), LocalQuotaStore())


def set_quota_store(store: QuotaStore | None) -> None:
    """Replace the process-wide store (tests; None rebuilds it from settings on next use)."""
    global _store
    _store = store
