"""One shared httpx.AsyncClient per event loop and outbound proxy (connection pooling; no retries: the
router owns them). A provider or key with a proxy (HTTP(S) or SOCKS5, via httpx[socks]) gets the client
for that proxy URL; everything else shares the direct one."""

from __future__ import annotations

import httpx
from django.conf import settings

from providers.adapters.base import Timeouts
from providers.netguard import guarded_async_client

from .loops import PerLoop


def _new_client(key: tuple[str, str]) -> httpx.AsyncClient:
    proxy, _allowed = key
    # Every upstream connection passes the SSRF guard (to the proxy, when there is one); no redirects.
    return guarded_async_client(
        proxy=proxy or None,
        limits=httpx.Limits(max_connections=500, max_keepalive_connections=100, keepalive_expiry=30),
        timeout=httpx.Timeout(settings.FREELLM_FIRST_TOKEN_TIMEOUT, connect=settings.FREELLM_CONNECT_TIMEOUT),
    )


_clients: PerLoop[tuple[str, str], httpx.AsyncClient] = PerLoop(
    _new_client, usable=lambda client: not client.is_closed)


def get_client(proxy: str | None = None) -> httpx.AsyncClient:
    """This loop's client for ``proxy`` (a proxy URL; None or "" = direct). The guard checks an address when
    it connects, so a changed FREELLM_UPSTREAM_ALLOW gets a new client: no pooled connection outlives the
    allowlist it was opened under."""
    return _clients.get((proxy or "", settings.FREELLM_UPSTREAM_ALLOW))


def default_timeouts() -> Timeouts:
    return Timeouts(
        connect=settings.FREELLM_CONNECT_TIMEOUT,
        first_token=settings.FREELLM_FIRST_TOKEN_TIMEOUT,
        idle=settings.FREELLM_IDLE_TIMEOUT,
    )
