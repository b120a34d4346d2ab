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
FAILURE_KINDS = frozenset({ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION})
RECENT = 20
REFRESH_SECONDS = 1.0
FIELDS = ("ok", "fail", "ttft_sum", "ttft_n", "tokens", "gen_seconds")


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


class RouteStatsStore:
    def __init__(self, backend: StatsBackend | None = None, now=time.time) -> None:
        self.backend = backend or StatsBackend()
        self.now = now
        self._pending: dict[str, RouteStats] = {}
        self._view: dict[str, RouteStats] = {}
        self._view_at = -1e9
        self._flushing: asyncio.Task | None = None

    # --- writes (settle time; never awaited by a request) ----------------------------------------------

    def observe(self, provider: str, model: str, key: str, *, ok: bool, ttft: float | None = None,
                tokens: int = 0, gen_seconds: float = 0.0) -> None:
        now = self.now()
        for name in (model_key(provider, model), key_key(provider, model, key)):
            delta = self._pending.get(name)
            if delta is None:
                delta = self._pending[name] = RouteStats(at=now)
            delta.ok += ok
            delta.fail += not ok
            if ttft is not None:
                delta.ttft_sum += ttft
                delta.ttft_n += 1
                delta.recent.append(ttft)
            if tokens > 0 and gen_seconds > 0:
                delta.tokens += tokens
                delta.gen_seconds += gen_seconds
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
        try:
            await self.backend.merge(pending, now)
        except Exception as exc:  # noqa: BLE001  (stats are advisory: never let them fail anything)
            log.warning("route stats not saved (%s); they are advisory and will be rebuilt", type(exc).__name__)
        self._view_at = -1e9  # this process's own news is visible at once

    # --- reads (ordering a chain) -----------------------------------------------------------------------

    async def view(self, names: Iterable[str]) -> dict[str, RouteStats]:
        """Stats of ``names`` (model_key / key_key values), decayed to now; missing names were never seen."""
        names = list(names)
        now = self.now()
        stale = time.monotonic() - self._view_at > REFRESH_SECONDS
        if stale or any(n not in self._view for n in names):
            try:
                fresh = await self.backend.read(names)
            except Exception as exc:  # noqa: BLE001
                log.warning("route stats unavailable (%s); ordering by what this process has", type(exc).__name__)
                fresh = {}
            self._view.update(fresh)
            self._view_at = time.monotonic()
        return {n: self._view[n].decayed(now) for n in names if n in self._view}


_store: RouteStatsStore | None = None


def get_stats_store() -> RouteStatsStore:
    global _store
    if _store is None:
        _store = RouteStatsStore()
    return _store
