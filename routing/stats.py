"""Live route statistics: how reliable and how fast each (provider, model) and each of its keys has been lately.

Every figure is a time-decayed sum (half-life FREELLM_STATS_HALF_LIFE seconds): a sum ``s`` last updated at
``t`` is worth ``s * 2^-((now - t) / half_life)`` now. Decayed sums add up, so several gateway processes can
merge their observations into one shared record (Redis: one script call per route and flush, applying the
decay and adding the new figures atomically), and old behaviour fades instead of being cut at a window edge.

    success probability   (ok + 1) / (ok + fail + 2): the mean of a Beta(1, 1) prior updated by the counts
    time to first token   ttft_sum / ttft_n (seconds from the call to its first content)
    output tokens / s     tokens / gen_seconds (after the first token)
    recent p50            median of the last RECENT latencies

Only failures that say something about the route count as failures (5xx, timeouts, connection errors, empty
or broken answers); a 429 is quota, a 400 is the request, a 401 is the key. Observations are taken at settle
time into an in-process buffer; ``flush`` (a background task, at most once a second) writes them to the
shared store, and reads come from an in-process view refreshed from it at most once a second.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings

from providers.adapters.base import ErrorKind

log = logging.getLogger(__name__)

# Errors that are the route's own doing.
FAILURE_KINDS = frozenset({ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.EMPTY})
RECENT = 20
# Output speed is only measured on answers at least this long: over a handful of tokens it is mostly noise.
SPEED_MIN_TOKENS = 32
REFRESH_SECONDS = 1.0
FIELDS = ("ok", "fail", "ttft_sum", "ttft_n", "tokens", "gen_seconds")  # also listed in _MERGE


@dataclass
class RouteStats:
    ok: float = 0.0
    fail: float = 0.0
    ttft_sum: float = 0.0
    ttft_n: float = 0.0
    tokens: float = 0.0
    gen_seconds: float = 0.0
    at: float = 0.0  # wall-clock time the sums are valued at
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))

    def decayed(self, now: float) -> RouteStats:
        factor = _decay(now - self.at) if self.at else 1.0
        return RouteStats(*(getattr(self, f) * factor for f in FIELDS), at=now, recent=deque(self.recent, RECENT))

    def add(self, other: RouteStats) -> None:
        """Fold ``other`` (valued at the same time) into these sums."""
        for f in FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.recent.extend(other.recent)

    @property
    def samples(self) -> float:
        return self.ok + self.fail

    @property
    def success_probability(self) -> float:
        return (self.ok + 1) / (self.ok + self.fail + 2)

    @property
    def ttft(self) -> float | None:
        return self.ttft_sum / self.ttft_n if self.ttft_n > 1e-9 else None

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.gen_seconds if self.gen_seconds > 1e-6 and self.tokens > 0 else None

    @property
    def recent_p50(self) -> float | None:
        return statistics.median(self.recent) if self.recent else None

    def summary(self) -> dict:
        """For the admin and the routing-state API."""
        def rnd(value: float | None, digits: int = 3) -> float | None:
            return None if value is None else round(value, digits)

        return {"samples": round(self.samples, 1), "success_probability": rnd(self.success_probability),
                "ttft_s": rnd(self.ttft), "tokens_per_s": rnd(self.tokens_per_second, 1),
                "recent_p50_s": rnd(self.recent_p50)}


def _decay(age: float) -> float:
    return math.pow(2.0, -max(0.0, age) / settings.FREELLM_STATS_HALF_LIFE)


def model_key(provider: str, model: str) -> str:
    return f"{provider}|{model}"


def key_key(provider: str, model: str, key: str) -> str:
    return f"{provider}|{model}|{key}"


def _observation(now: float, *, ok: bool, ttft: float | None, tokens: int, gen_seconds: float) -> RouteStats:
    obs = RouteStats(ok=float(ok), fail=float(not ok), at=now)
    if ttft is not None:
        obs.ttft_sum, obs.ttft_n = ttft, 1.0
        obs.recent.append(ttft)
    if tokens >= SPEED_MIN_TOKENS and gen_seconds > 0:
        obs.tokens, obs.gen_seconds = float(tokens), gen_seconds
    return obs


class StatsBackend:
    """In-process (embedded default): the buffer is the store."""

    def __init__(self) -> None:
        self.records: dict[str, RouteStats] = {}

    async def merge(self, deltas: dict[str, RouteStats], now: float) -> None:
        for name, delta in deltas.items():
            current = self.records.get(name)
            current = current.decayed(now) if current else RouteStats(at=now)
            current.add(delta)
            self.records[name] = current

    async def read(self, names: Iterable[str]) -> dict[str, RouteStats]:
        return {n: self.records[n] for n in names if n in self.records}


# One route's record in Redis: a hash of the decayed sums (FIELDS, in this order) valued at field `at`, plus a
# capped list of recent times to first token. The script values the stored sums at `now` (the decay), adds
# the batch's and writes them back, so flushes of several processes can interleave in any order and the
# record stays the sum of everything observed. ARGV: half-life, now, ttl, how many recent values to keep, the six sums, then recent values.
_MERGE = """
local fields = {'ok', 'fail', 'ttft_sum', 'ttft_n', 'tokens', 'gen_seconds'}
local half_life, now, ttl, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or now)
local factor = 2 ^ (-math.max(0, now - at) / half_life)
for i, name in ipairs(fields) do
  local old = tonumber(redis.call('HGET', KEYS[1], name) or 0)
  redis.call('HSET', KEYS[1], name, tostring(old * factor + tonumber(ARGV[4 + i])))
end
redis.call('HSET', KEYS[1], 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], ttl)
for i = 5 + #fields, #ARGV do
  redis.call('LPUSH', KEYS[2], ARGV[i])
end
redis.call('LTRIM', KEYS[2], 0, keep - 1)
redis.call('EXPIRE', KEYS[2], ttl)
"""
PREFIX = "freellm:s:"


class RedisStatsBackend(StatsBackend):
    """Shared by every gateway process; a record outlives a restart (it expires after 20 half-lives idle)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def _client(self):
        from routing.redis import redis_client

        return redis_client(self.url)

    async def merge(self, deltas: dict[str, RouteStats], now: float) -> None:
        from routing.redis import run_scripts

        client = self._client()
        script = client.register_script(_MERGE)
        ttl = int(settings.FREELLM_STATS_HALF_LIFE * 20)
        calls = []
        for name, delta in deltas.items():
            delta = delta.decayed(now)
            args = [settings.FREELLM_STATS_HALF_LIFE, now, ttl, RECENT, *(getattr(delta, f) for f in FIELDS),
                    *delta.recent]
            calls.append((script, [f"{PREFIX}{name}", f"{PREFIX}{name}:recent"], args))
        await run_scripts(client, calls)

    async def read(self, names: Iterable[str]) -> dict[str, RouteStats]:
        names = list(names)
        async with self._client().pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(f"{PREFIX}{name}")
                pipe.lrange(f"{PREFIX}{name}:recent", 0, RECENT - 1)
            raw = await pipe.execute()
        found = {}
        for i, name in enumerate(names):
            record, recent = raw[2 * i], raw[2 * i + 1]
            if record:
                found[name] = RouteStats(*(float(record.get(f, 0)) for f in FIELDS), at=float(record["at"]),
                                         recent=deque((float(v) for v in reversed(recent)), RECENT))
        return found


class RouteStatsStore:
    def __init__(self, backend: StatsBackend | None = None, now=time.time) -> None:
        from routing.redis import RedisBreaker

        self.backend = backend or StatsBackend()
        # Stats are advisory: while Redis is away each process orders by what it saw itself.
        self.breaker = RedisBreaker(log=log, down="route stats not shared while Redis is unreachable (%(error)s)",
                                    back="route stats shared again")
        self.now = now
        self._pending: dict[str, RouteStats] = {}
        self._view: dict[str, RouteStats] = {}
        self._view_at = -1e9
        self._unseen: set[str] = set()  # names the last reads found nothing for
        self._flushing: asyncio.Task | None = None

    # --- writes (settle time; never awaited by a request) ----------------------------------------------

    def observe(self, provider: str, model: str, key: str, *, ok: bool, ttft: float | None = None,
                tokens: int = 0, gen_seconds: float = 0.0) -> None:
        now = self.now()
        for name in (model_key(provider, model), key_key(provider, model, key)):
            # Into the batch for the shared record, and into this process's view at once (the next request
            # of this process sees it without waiting for the flush).
            for book in (self._pending, self._view):
                entry = book.get(name)
                entry = entry.decayed(now) if entry else RouteStats(at=now)
                entry.add(_observation(now, ok=ok, ttft=ttft, tokens=tokens, gen_seconds=gen_seconds))
                book[name] = entry
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._flushing is None or self._flushing.done():
            # An empty context: nothing of the request (asgiref's thread-sensitive context) lives on in it.
            self._flushing = loop.create_task(self._flush_soon(), context=contextvars.Context())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(REFRESH_SECONDS / 4)
        await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        now = self.now()

        async def dropped() -> None:
            return None

        await self.breaker.call(lambda: self.backend.merge(pending, now), dropped)

    # --- reads (ordering a chain) -----------------------------------------------------------------------

    async def view(self, names: Iterable[str]) -> dict[str, RouteStats]:
        """Stats of ``names`` (model_key / key_key values), decayed to now; missing names were never seen."""
        names = list(names)
        now = self.now()
        stale = time.monotonic() - self._view_at > REFRESH_SECONDS
        if stale:
            # One read a second: the requests that come while it runs use the view as it is. A name the
            # store had nothing for is not asked again before then either (a chain's model that never
            # served would otherwise cost every request a read).
            self._view_at = time.monotonic()
            self._unseen.clear()
        if stale or any(n not in self._view and n not in self._unseen for n in names):
            async def none_shared() -> dict[str, RouteStats]:
                return {}

            fresh = await self.breaker.call(lambda: self.backend.read(names), none_shared)
            self._view.update(fresh)
            self._unseen.update(n for n in names if n not in fresh)
        return {n: self._view[n].decayed(now) for n in names if n in self._view}


_store: RouteStatsStore | None = None


def get_stats_store() -> RouteStatsStore:
    global _store
    if _store is None:
        url = settings.REDIS_URL
        _store = RouteStatsStore(RedisStatsBackend(url) if url else StatsBackend())
    return _store


def reset_stats_store() -> None:
    """Forget this process's stats (tests; the shared record in Redis is keyed under freellm:)."""
    global _store
    _store = None
