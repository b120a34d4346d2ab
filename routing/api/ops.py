"""What a load balancer, Kubernetes or Prometheus asks of a gateway process.

    GET /livez     the process is up and its event loop answers (no dependency is checked)
    GET /readyz    the database, Redis (when configured) and the routing config: 200, or 503 naming the failure
    GET /metrics   Prometheus text: open from loopback, else only with `Authorization: Bearer
                   $FREELLM_METRICS_TOKEN` (404 when no token is set, so the endpoint does not advertise itself)

Plain async Django views, served like the API without the middleware stack (freellm/asgi.py): a production
SSL redirect or a session lookup has no place in a health probe.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from routing import metrics
from routing.config import get_routing_config
from routing.quota import get_quota_store

# A readiness check that takes longer than this has failed: the probe must answer well within its own timeout.
CHECK_TIMEOUT = 2.0


async def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_ready(), "routing_config": _routing_config_ready()}
    if settings.REDIS_URL:
        checks["redis"] = _redis_ready()
    results = dict(zip(checks, await asyncio.gather(*(_timed(c) for c in checks.values())), strict=True))
    ready = all(result["ok"] for result in results.values())
    return JsonResponse({"status": "ok" if ready else "fail", "checks": results}, status=200 if ready else 503)


async def _timed(check) -> dict:
    began = time.monotonic()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            detail = await check
        result = {"ok": True, **(detail or {})}
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {CHECK_TIMEOUT:g}s"}
    except Exception as exc:  # noqa: BLE001  (any failure is "not ready"; its type is the useful part)
        # The exception's type only: a driver's message may carry a host name or a user.
        result = {"ok": False, "error": type(exc).__name__}
    result["ms"] = round((time.monotonic() - began) * 1000, 1)
    return result


async def _database_ready() -> None:
    # A thread of its own (not asgiref's shared one, which a hung database would block for every request),
    # with its own connection, closed again.
    await sync_to_async(_database_ping, thread_sensitive=False)()


def _database_ping() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


async def _redis_ready() -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT,
                                     socket_connect_timeout=CHECK_TIMEOUT)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _routing_config_ready() -> dict:
    cfg = await get_routing_config()
    return {"models": len(cfg.models), "chains": len(cfg.chains)}


async def metrics_view(request: HttpRequest) -> HttpResponse:
    denied = _metrics_denied(request)
    if denied is not None:
        return denied
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    for family in await metrics.route_families(await get_routing_config(), get_quota_store()):
        registry.register(_Fixed(family))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Fixed:
    """A collector that yields one metric family read before the scrape."""

    def __init__(self, family) -> None:
        self.family = family

    def collect(self):
        yield self.family


def _metrics_denied(request: HttpRequest) -> HttpResponse | None:
    token = settings.FREELLM_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
    if _from_loopback(request):
        return None
    if not token:
        return HttpResponse(status=404)
    return HttpResponse("metrics need Authorization: Bearer <FREELLM_METRICS_TOKEN>\n", status=401,
                        content_type="text/plain", headers={"WWW-Authenticate": "Bearer"})


def _from_loopback(request: HttpRequest) -> bool:
    # A reverse proxy on the same host makes every client look local; it says so with X-Forwarded-For.
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
