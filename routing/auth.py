"""Unified-key authentication for the /v1 API, cached in process so the steady state makes no query."""

from __future__ import annotations

import time

from django.db import DatabaseError
from django.http import HttpRequest

from routing.errors import GatewayError
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

    try:
        version = (await get_routing_config()).version
    except DatabaseError:
        # The database is down and the config changed meanwhile: keys known to this process still work.
        version = None
    digest = hash_api_key(raw)
    hit = _cache.get(digest)
    now = time.monotonic()
    if hit and version in (hit[1], None) and now - hit[2] < CACHE_SECONDS:
        return hit[0]
    # Brute force: an address that sent too many wrong keys is refused before any lookup.
    await auth_throttle_check(request)
    try:
        api_key = await api_key_authenticate(raw)
    except DatabaseError:
        if hit:
            # A database outage: a key this process knew (however long ago) is served rather than refused.
            return hit[0]
        raise GatewayError(
            503, "The gateway cannot check this API key right now: its database is unavailable. Retry shortly.",
            code="database_unavailable", headers={"Retry-After": "5"},
        ) from None
    if api_key is None:
        _cache.pop(digest, None)
        await auth_failure_record(request)
        return None
    if len(_cache) >= _MAX_ENTRIES:
        _cache.clear()
    _cache[digest] = (api_key, version or "", now)
    return api_key
