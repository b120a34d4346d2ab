"""One shared httpx.AsyncClient per event loop (connection pooling; no retries: the router owns them)."""

from __future__ import annotations

import httpx
from django.conf import settings

from providers.adapters.base import Timeouts
from providers.netguard import guarded_async_client

from .loops import PerLoop


def _new_client(_: None) -> httpx.AsyncClient:
    # Every upstream connection passes the SSRF guard; redirects are never followed.
    return guarded_async_client(
        limits=httpx.Limits(max_connections=500, max_keepalive_connections=100, keepalive_expiry=30),
        timeout=httpx.Timeout(settings.FREELLM_FIRST_TOKEN_TIMEOUT, connect=settings.FREELLM_CONNECT_TIMEOUT),
    )


_clients: PerLoop[None, httpx.AsyncClient] = PerLoop(_new_client, usable=lambda client: not client.is_closed)


def get_client() -> httpx.AsyncClient:
    return _clients.get(None)


def default_timeouts() -> Timeouts:
    return Timeouts(
        connect=settings.FREELLM_CONNECT_TIMEOUT,
        first_token=settings.FREELLM_FIRST_TOKEN_TIMEOUT,
        idle=settings.FREELLM_IDLE_TIMEOUT,
    )
