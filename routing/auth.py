"""Unified-key authentication for the /v1 API, cached in process so the steady state makes no query."""

from __future__ import annotations

import time

from django.http import HttpRequest

from routing.models import ApiKey, hash_api_key
from routing.selectors import api_key_authenticate
from routing.throttle import auth_failure_record, auth_throttle_check

# hash → (key, config version, cached at). Revoking a key bumps the config version, which drops the cache.
_cache: dict[str, tuple[ApiKey, str, float]] = {}
CACHE_SECONDS = 60.0
_MAX_ENTRIES = 10_000


def raw_key_from(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


async def authenticate_request(request: HttpRequest) -> ApiKey | None:
    raw = raw_key_from(request)
    if not raw:
        return None
    from routing.config import get_routing_config

    version = (await get_routing_config()).version
    digest = hash_api_key(raw)
    hit = _cache.get(digest)
    now = time.monotonic()
    if hit and hit[1] == version and now - hit[2] < CACHE_SECONDS:
        return hit[0]
    # Brute force: an address that sent too many wrong keys is refused before any lookup.
    await auth_throttle_check(request)
    api_key = await api_key_authenticate(raw)
    if api_key is None:
        _cache.pop(digest, None)
        await auth_failure_record(request)
        return None
    if len(_cache) >= _MAX_ENTRIES:
        _cache.clear()
    _cache[digest] = (api_key, version, now)
    return api_key



