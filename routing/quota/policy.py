"""The rules both quota backends share: window geometry, daily reset, circuit-breaker timings.

Kept in one place so that the in-process store and the Redis Lua script cannot drift apart: the Redis store
passes these values into its scripts as arguments.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Minute windows are summed over per-second buckets. A charge made during second s is counted while
# floor(now) - s <= MINUTE_SPAN, i.e. for at least 60 and at most 61 seconds: any real 60-second interval
# therefore sees every charge made inside it, so no 60-second interval can hold more than the limit.
MINUTE_SPAN = 60
# Consecutive server errors / timeouts / connection failures that open a closed circuit.
FAILURE_THRESHOLD = 2
# Cooldown of the n-th consecutive opening for failures (a success resets the ladder).
FAILURE_COOLDOWNS = (30.0, 120.0, 600.0, 3600.0)
# A 429 that says nothing about when to come back.
DEFAULT_RATE_LIMIT_COOLDOWN = 60.0
# What a Denied("key_invalid") advertises: it lasts until an admin or a probe clears it.
KEY_INVALID_RETRY = 3600.0
# Day counters and lease records outlive their day by this much so late settles still land.
DAY_TTL = 2 * 86400
# Learned limits are forgotten after a week without being seen again (free tiers change).
LEARNED_TTL = 7 * 86400


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class _Day:
    start: float
    end: float  # the next midnight
    id: str


# The current day of each zone: every reserve and settle asks, and the answer changes once a day.
_days: dict[str, _Day] = {}


def _day(now: float, tz: str) -> _Day:
    day = _days.get(tz)
    if day is None or not day.start <= now < day.end:
        zone = _zone(tz)
        date = datetime.fromtimestamp(now, zone).date()
        day = _Day(datetime.combine(date, datetime.min.time(), zone).timestamp(),
                   datetime.combine(date + timedelta(days=1), datetime.min.time(), zone).timestamp(),
                   date.isoformat())
        _days[tz] = day
    return day


def day_id(now: float, tz: str) -> str:
    """The calendar day (in the provider's reset zone) that ``now`` falls in, e.g. "2026-11-24"."""
    return _day(now, tz).id


def seconds_to_midnight(now: float, tz: str) -> float:
    """Seconds until the next midnight in ``tz`` (DST-aware), when the daily windows reset."""
    return max(0.0, _day(now, tz).end - now)


def failure_cooldown(level: int) -> float:
    return FAILURE_COOLDOWNS[min(level, len(FAILURE_COOLDOWNS) - 1)]


def minute_retry(buckets: list[tuple[int, int]], excess: int, now: float) -> float:
    """Seconds until ``excess`` units have left the minute window; buckets are (second, amount), any order."""
    freed = 0
    for second, amount in sorted(buckets):
        freed += amount
        if freed >= excess:
            return max(0.0, second + MINUTE_SPAN + 1 - now)
    return float(MINUTE_SPAN)


def resolve_wait(seconds: float, now: float, tz: str) -> float:
    """``math.inf`` stands for "until the daily reset"."""
    return seconds_to_midnight(now, tz) if math.isinf(seconds) else seconds
