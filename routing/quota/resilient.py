"""Degraded mode: Redis primary, in-process fallback, no 500s when Redis goes away.

On a Redis error the call is served by a local store instead, a warning is logged once per outage and
``degraded`` is set (the admin shows it). Redis is retried at most every ``retry_interval`` seconds and
used again as soon as it answers. Leases handed out by the fallback are settled/released there, wherever
the traffic has gone since. While degraded each process only knows its own traffic, so N processes can
spend up to N times a limit: the price of staying up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from providers.adapters.base import ErrorKind
from routing.redis import REDIS_ERRORS, RedisBreaker

from .base import Denied, Lease, QuotaStore, Route, RouteStatus
from .local import LocalQuotaStore

log = logging.getLogger(__name__)

# Kept for the admin pages that catch them around a direct Redis read.
BACKEND_ERRORS = REDIS_ERRORS


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
        self.breaker = RedisBreaker(
            log=log,
            down="quota store: Redis unavailable (%(error)s); serving on this process's local quota state "
            "until it returns",
            back="quota store: Redis is back; shared quota accounting resumed",
            retry_interval=retry_interval,
            clock=clock,
        )

    @property
    def degraded(self) -> bool:
        return self.breaker.degraded

    @property
    def degraded_since(self) -> float | None:
        return self.breaker.degraded_since

    @property
    def last_error(self) -> str:
        return self.breaker.last_error

    @property
    def backend(self) -> str:
        name = getattr(self.primary, "backend", "primary")
        return f"{name} (degraded: local)" if self.degraded else name

    async def _call(self, method: str, *args, **kwargs):
        return await self.breaker.call(
            lambda: getattr(self.primary, method)(*args, **kwargs),
            lambda: getattr(self.fallback, method)(*args, **kwargs),
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

    async def finish(
        self,
        lease: Lease,
        used_tokens: int,
        route: Route,
        error: ErrorKind | None,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        message: str = "",
    ) -> None:
        if self.fallback.owns(lease):
            # Reserved while Redis was away: settle where it was charged, record where health lives now.
            await self.fallback.settle(lease, used_tokens)
            return await self.record(route, error, retry_after=retry_after, headers=headers, message=message)
        return await self._call("finish", lease, used_tokens, route, error, retry_after=retry_after,
                                headers=headers, message=message)

    async def status(self, route: Route) -> RouteStatus:
        return await self._call("status", route)

    async def clear_cooldown(self, route: Route) -> None:
        # Clear both: the admin means "this route is fine", whichever state is in use.
        await self.fallback.clear_cooldown(route)
        return await self._call("clear_cooldown", route)

    async def headroom(self, route: Route) -> float:
        return await self._call("headroom", route)

    async def headrooms(self, routes: Sequence[Route]) -> list[float]:
        return await self._call("headrooms", routes)

    async def set_key_invalid(self, route: Route, invalid: bool) -> None:
        await self.fallback.set_key_invalid(route, invalid)
        return await self._call("set_key_invalid", route, invalid)
