"""Failed API-key authentications, throttled per client address (brute force).

After ``FREELLM_AUTH_FAILURE_LIMIT`` wrong keys from one address within a window of
``FREELLM_AUTH_FAILURE_WINDOW`` seconds, that address gets 429 with Retry-After until the window ends.
Keys already known good (in the auth cache) keep working from there, so that one broken script behind
a shared NAT does not lock out the whole team. Counted in Redis when REDIS_URL is set, so every gateway
process sees the same count; in process otherwise, and while Redis is unreachable. Through the gateway's
pooled client (routing.redis), not Django's cache: that one would open a Redis connection per concurrent
request context, and keep it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

from django.conf import settings
from django.http import HttpRequest

from routing.errors import GatewayError
from routing.redis import REDIS_ERRORS, redis_client

log = logging.getLogger(__name__)

_MAX_LOCAL_ADDRESSES = 10_000
# address → (window number, failures in it); used without Redis, and while it is unreachable.
_local: dict[str, tuple[int, int]] = {}


def client_address(request: HttpRequest) -> str:
    """The client's IP address: the socket peer, or with ``FREELLM_PROXY_COUNT`` = N trusted reverse proxies
    in front, the address the outermost of them saw (N-th from the right in X-Forwarded-For). Also
    django-axes' AXES_CLIENT_IP_CALLABLE, so the admin login and the API agree on who a client is."""
    meta = getattr(request, "META", None)
    if meta is not None:
        remote, forwarded = meta.get("REMOTE_ADDR") or "", meta.get("HTTP_X_FORWARDED_FOR", "")
    else:
        # An ASGI (Starlette) request: the MCP server's.
        client = getattr(request, "client", None)
        remote, forwarded = (client.host if client else ""), request.headers.get("x-forwarded-for", "")
    proxies = settings.FREELLM_PROXY_COUNT
    if proxies > 0:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            candidate = hops[-proxies]
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                log.warning("X-Forwarded-For entry %r is not an address; using the peer address", candidate[:64])
    return remote


def _window() -> tuple[int, float]:
    """The current window's number and the seconds left in it."""
    size = settings.FREELLM_AUTH_FAILURE_WINDOW
    now = time.time()
    return int(now // size), size - now % size


def _redis_key(address: str, window: int) -> str:
    return f"freellm:authfail:{address}:{window}"


async def _failures(address: str, window: int) -> int:
    if settings.REDIS_URL:
        try:
            return int(await redis_client(settings.REDIS_URL).get(_redis_key(address, window)) or 0)
        except REDIS_ERRORS:
            pass
    seen_window, count = _local.get(address, (window, 0))
    return count if seen_window == window else 0


async def auth_throttle_check(request: HttpRequest) -> None:
    """Raise 429 (with Retry-After) when this client address used up its failed attempts."""
    address = client_address(request)
    window, left = _window()
    if await _failures(address, window) >= settings.FREELLM_AUTH_FAILURE_LIMIT:
        retry = max(1, math.ceil(left))
        raise GatewayError(
            429,
            f"Too many requests with an invalid API key from your address; try again in {retry} s.",
            code="too_many_auth_failures",
            headers={"Retry-After": str(retry)},
        )


async def auth_failure_record(request: HttpRequest) -> None:
    address = client_address(request)
    window, left = _window()
    if settings.REDIS_URL:
        key = _redis_key(address, window)
        try:
            # The expiry is set once, with the count's first write; INCR keeps it.
            async with redis_client(settings.REDIS_URL).pipeline(transaction=False) as pipe:
                await pipe.set(key, 0, ex=math.ceil(left) + 1, nx=True).incr(key).execute()
            return
        except REDIS_ERRORS:
            log.warning("failed API-key attempts counted in process: Redis is unreachable")
    seen_window, count = _local.get(address, (window, 0))
    if len(_local) >= _MAX_LOCAL_ADDRESSES and address not in _local:
        _local.clear()
    _local[address] = (window, count + 1 if seen_window == window else 1)


def auth_throttle_reset() -> None:
    """Forget the in-process counts (tests)."""
    _local.clear()

