"""Routing-config version shared across processes; bumped on every provider/key/model/chain change."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

_CACHE_KEY = "freellm:config-version"


def _version_file():
    return settings.VAR_DIR / "config-version"


def bump_config_version() -> None:
    version = str(time.time_ns())
    if settings.REDIS_URL:
        cache.set(_CACHE_KEY, version, timeout=None)
    else:
        # Without Redis the embedded processes (daphne, worker, manage.py commands) share var/.
        _version_file().write_text(version)


def current_config_version() -> str:
    if settings.REDIS_URL:
        return cache.get(_CACHE_KEY) or "0"
    try:
        return _version_file().read_text()
    except FileNotFoundError:
        return "0"
