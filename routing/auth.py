"""Unified-key authentication for the /v1 API, cached in process so the steady state makes no query."""

from __future__ import annotations

import ipaddress
import time

from django.db import DatabaseError
from django.http import HttpRequest

from routing.errors import GatewayError
from routing.models import ApiKey, hash_api_key
from routing.selectors import api_key_authenticate, api_key_of_user
from routing.throttle import auth_failure_record, auth_throttle_check

# hash → (key, config version, cached at). Revoking a key bumps the config version, which drops the cache.
_cache: dict[str, tuple[ApiKey, str, float]] = {}
CACHE_SECONDS = 60.0
_rechecking: set[str] = set()  # hashes of the keys being looked up again right now
_MAX_ENTRIES = 10_000


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value ("" for any other scheme)."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def raw_key_from(request: HttpRequest) -> str | None:
    return bearer_token(request.headers.get("Authorization", "")) or request.headers.get("x-api-key") or None


async def authenticate_request(request: HttpRequest) -> ApiKey | None:
    return await authenticate_key(raw_key_from(request), request)


async def authenticate_key(raw: str | None, request: HttpRequest | None = None) -> ApiKey | None:
    """The active key ``raw`` is, or None; for front doors that find the key elsewhere (``x-goog-api-key``).
    With the ``request``, wrong keys are throttled per client address (routing.throttle)."""
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
    if hit and version in (hit[1], None) and (now - hit[2] < CACHE_SECONDS or digest in _rechecking):
        # Within CACHE_SECONDS; or just past it while one request checks the key again: the others go on with
        # the entry meanwhile, instead of every request in flight querying the database (and the throttle)
        # at once. A revoked key never gets here: revoking bumps the version.
        return hit[0]
    if request is not None:
        # Brute force: an address that sent too many wrong keys is refused before any lookup.
        await auth_throttle_check(request)
    _rechecking.add(digest)
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
    finally:
        _rechecking.discard(digest)
    if api_key is None:
        _cache.pop(digest, None)
        if request is not None:
            await auth_failure_record(request)
        return None
    _remember(digest, api_key, version or "", now)
    return api_key


def recently_valid(raw: str) -> bool:
    """Whether this process found ``raw`` a good key within CACHE_SECONDS: no I/O, no version check. For the
    server's check before it reads a body (freellm.asgi), which only decides whether to read it: the front
    door's own authentication still runs on the request."""
    hit = _cache.get(hash_api_key(raw)) if raw else None
    return hit is not None and time.monotonic() - hit[2] < CACHE_SECONDS


def _remember(cache_key: str, api_key: ApiKey, version: str, now: float) -> None:
    if len(_cache) >= _MAX_ENTRIES:
        _cache.clear()
    _cache[cache_key] = (api_key, version, now)


def is_from_this_machine(request: HttpRequest) -> bool:
    """A direct connection from loopback. Anything that came through a proxy says so in a forwarding header
    and is not "this machine", even when the proxy runs on it."""
    if any(request.headers.get(h) for h in ("X-Forwarded-For", "Forwarded", "X-Real-IP")):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "").is_loopback
    except ValueError:
        return False


async def keyless_identity(username: str) -> ApiKey | None:
    """Whom a keyless request is served as: the user's oldest active key, or (a user without one) an unsaved
    key that names only the user, so the request log still says who it was. None for an unknown or inactive
    user."""
    from routing.config import get_routing_config

    version = (await get_routing_config()).version
    cache_key = "keyless:" + username
    hit = _cache.get(cache_key)
    now = time.monotonic()
    if hit and hit[1] == version and now - hit[2] < CACHE_SECONDS:
        return hit[0]
    api_key = await api_key_of_user(username)
    if api_key is None:
        _cache.pop(cache_key, None)
        return None
    _remember(cache_key, api_key, version, now)
    return api_key
