"""One shared httpx.AsyncClient per event loop (connection pooling; no retries: the router owns them)."""

from __future__ import annotations

import asyncio
import weakref

import httpx
from django.conf import settings

from providers.adapters.base import Timeouts
from providers.netguard import guarded_async_client

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def get_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        # Every upstream connection passes the SSRF guard; redirects are never followed.
        client = guarded_async_client(
            limits=httpx.Limits(max_connections=500, max_keepalive_connections=100, keepalive_expiry=30),
            timeout=httpx.Timeout(settings.FREELLM_FIRST_TOKEN_TIMEOUT, connect=settings.FREELLM_CONNECT_TIMEOUT),
        )
        _clients[loop] = client
    return client


def default_timeouts() -> Timeouts:
    return Timeouts(
        connect=settings.FREELLM_CONNECT_TIMEOUT,
        first_token=settings.FREELLM_FIRST_TOKEN_TIMEOUT,
        idle=settings.FREELLM_IDLE_TIMEOUT,
    )
