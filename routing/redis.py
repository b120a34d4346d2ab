"""Redis for the gateway's own state: one client per event loop and URL, and one way to live without it.

Redis holds the shared quota counters, the sticky sessions, the routing config version and (through the
channel layer) the live feed. None of them is worth a 500: when Redis is unreachable each user falls back
to what this process knows, and a ``RedisBreaker`` decides when to try Redis again and tells the operator
once that it went away and once that it is back, instead of a warning per request.

The breaker is this small class rather than pybreaker or circuitbreaker: those raise "circuit open" for the
caller to handle (we want a fallback call), pybreaker's async support goes through Tornado, neither takes
the injectable clock the outage tests drive, and both open only after several failures where one refused
connection is already enough to stop paying a connect timeout per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from .loops import PerLoop

T = TypeVar("T")

# What "Redis is unreachable" looks like: refused or reset connections, timeouts, protocol errors.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


def _new_client(url: str) -> aioredis.Redis:
    from django.conf import settings

    # Fail fast (short timeouts, one retry without backoff): a dead Redis must send its users to their
    # fallback quickly, not eat the request's time budget. A burst beyond the pool waits up to 2 s for a
    # connection: redis-py's plain pool raises "Too many connections" at its cap (100 in 8.x), which read as an
    # outage and sent every store to its in-process fallback under load.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=settings.FREELLM_REDIS_MAX_CONNECTIONS, timeout=2.0,
        socket_connect_timeout=1.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 1), decode_responses=True,
    )
    return aioredis.Redis(connection_pool=pool)


_clients: PerLoop[str, aioredis.Redis] = PerLoop(_new_client)


def redis_client(url: str) -> aioredis.Redis:
    """This event loop's client for ``url`` (answers are str: ``decode_responses``)."""
    return _clients.get(url)


async def redis_client_close(url: str) -> None:
    """Close this event loop's client for ``url`` (tests; short-lived loops of sync callers)."""
    client = _clients.pop(url)
    if client is not None:
        await client.aclose()


async def run_scripts(client: aioredis.Redis, calls: list[tuple[object, list, list]]) -> list:
    """Several registered scripts (``client.register_script``) in one pipelined round trip: each call is
    (script, keys, args); the replies come back in order, and the first error is raised.

    redis-py's own pipelines send SCRIPT EXISTS for their scripts before every execute, a second round trip
    per pipeline; here each script goes by its SHA, and only a server that forgot them (a restart, SCRIPT
    FLUSH) costs a load and a second try of the calls it refused."""
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        async with client.pipeline(transaction=False) as pipe:
            for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                pipe.script_load(script.script)
            for i in missing:
                script, keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            retried = (await pipe.execute(raise_on_error=False))[-len(missing):]
        for i, reply in zip(missing, retried, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class RedisBreaker:
    """One Redis user's view of an outage.

    After a failure Redis is skipped for ``retry_interval`` seconds (0: every call tries it), so an
    unreachable Redis costs one timeout per interval and not one per request. ``down`` is logged once per
    outage (``%(error)s`` is the error), ``back`` once when Redis answers again.
    """

    def __init__(
        self,
        *,
        log: logging.Logger,
        down: str,
        back: str,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        back_level: int = logging.WARNING,
        traceback: bool = False,
    ) -> None:
        self.log = log
        self.down = down
        self.back = back
        self.retry_interval = retry_interval
        self.clock = clock
        self.back_level = back_level
        self.traceback = traceback
        self.degraded = False
        self.degraded_since: float | None = None  # wall clock, for the admin
        self.last_error = ""
        self._retry_at = 0.0

    def should_try(self) -> bool:
        return not self.degraded or self.clock() >= self._retry_at

    def failed(self, exc: BaseException, **context: object) -> None:
        self._retry_at = self.clock() + self.retry_interval
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if not self.degraded:
            self.degraded = True
            self.degraded_since = time.time()
            self.log.warning(self.down, {"error": self.last_error, **context},
                             exc_info=exc if self.traceback else None)

    def worked(self) -> None:
        if self.degraded:
            self.degraded = False
            self.degraded_since = None
            self.log.log(self.back_level, self.back)

    def reset(self) -> None:
        """Forget an outage without announcing anything (tests)."""
        self.degraded = False
        self.degraded_since = None
        self.last_error = ""
        self._retry_at = 0.0

    async def call(self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        """``primary()`` unless Redis is being skipped or fails with a Redis error, then ``fallback()``."""
        if not self.should_try():
            return await fallback()
        try:
            result = await primary()
        except REDIS_ERRORS as exc:
            self.failed(exc)
            return await fallback()
        self.worked()
        return result
