"""Degraded mode: Redis primary, in-process fallback, no 500s when Redis goes away.

On a Redis error the call is served by a local store instead, a warning is logged once per outage and
``degraded`` is set (the admin shows it). Redis is retried at most every ``retry_interval`` seconds and
used again as soon as it answers. Leases handed out by the fallback are settled/released there, wherever
the traffic has gone since. While degraded each process only knows its own traffic, so N processes can
spend up to N times a limit: the price of staying up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from redis.exceptions import RedisError

from providers.adapters.base import ErrorKind

from .base import Denied, Lease, QuotaStore, Route, RouteStatus
from .local import LocalQuotaStore

log = logging.getLogger(__name__)

BACKEND_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class ResilientQuotaStore(QuotaStore):
    def __init__(
        self,
        primary: QuotaStore,
        fallback: LocalQuotaStore,
        *,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.retry_interval = retry_interval
        self.clock = clock
        self.degraded = False
        self.degraded_since: float | None = None  # wall clock, for the admin
        self.last_error = ""
        self._retry_at = 0.0

    @property
    def backend(self) -> str:
        return f"{getattr(self.primary, 'backend', 'primary')} (degraded: local)" if self.degraded else getattr(
            self.primary, "backend", "primary"
        )

    async def _call(self, method: str, *args, **kwargs):
        if self.degraded and self.clock() < self._retry_at:
            return await getattr(self.fallback, method)(*args, **kwargs)
        try:
            result = await getattr(self.primary, method)(*args, **kwargs)
        except BACKEND_ERRORS as exc:
            self._went_down(exc)
            return await getattr(self.fallback, method)(*args, **kwargs)
        if self.degraded:
            self.degraded = False
            self.degraded_since = None
            log.warning("quota store: Redis is back; shared quota accounting resumed")
        return result

    def _went_down(self, exc: BaseException) -> None:
        self._retry_at = self.clock() + self.retry_interval
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if not self.degraded:
            self.degraded = True
            self.degraded_since = time.time()
            log.warning(
                "quota store: Redis unavailable (%s); serving on this process's local quota state until it returns",
                self.last_error,
            )

    async def reserve(self, route: Route, tokens: int) -> Lease | Denied:
        return await self._call("reserve", route, tokens)

    async def settle(self, lease: Lease, used_tokens: int) -> None:
        if self.fallback.owns(lease):
            return await self.fallback.settle(lease, used_tokens)
        return await self._call("settle", lease, used_tokens)

    async def release(self, lease: Lease) -> None:
        if self.fallback.owns(lease):
            return await self.fallback.release(lease)
        return await self._call("release", lease)

    async def record(
        self,
        route: Route,
        error: ErrorKind | None,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        message: str = "",
    ) -> None:
        return await self._call("record", route, error, retry_after=retry_after, headers=headers, message=message)

    async def status(self, route: Route) -> RouteStatus:
        return await self._call("status", route)

    async def clear_cooldown(self, route: Route) -> None:
        # Clear both: the admin means "this route is fine", whichever state is in use.
        await self.fallback.clear_cooldown(route)
        return await self._call("clear_cooldown", route)

    async def headroom(self, route: Route) -> float:
        return await self._call("headroom", route)

    async def set_key_invalid(self, route: Route, invalid: bool) -> None:
        await self.fallback.set_key_invalid(route, invalid)
        return await self._call("set_key_invalid", route, invalid)
