"""What a provider tells us about its limits, read from response headers and error texts. No I/O here.

Both quota backends feed ``observe()`` the headers/message of an attempt and apply the resulting
``Observation``: learned limits (the effective limit is ``min(configured, learned)``), floors for our usage
counters (someone else spent the key too), and how long an exhausted window stays shut.

Formats handled:
- OpenAI / Groq: ``x-ratelimit-limit-requests``, ``x-ratelimit-limit-tokens``, ``x-ratelimit-remaining-*``,
  ``x-ratelimit-reset-*`` with durations like ``"2m59.56s"``, ``"7.66s"``, ``"1s"``, ``"120ms"``. Groq's
  requests header is per day and its tokens header per minute; OpenAI's are both per minute. The requests
  window is inferred: a value above the configured RPM, or a reset further than a minute away, is a day.
- Cerebras-style explicit windows: ``x-ratelimit-limit-requests-day``, ``x-ratelimit-limit-tokens-minute``...
- ``Retry-After`` / ``retry-after-ms`` (via ``parse_retry_after``).
- Groq error texts: "... on tokens per minute (TPM): Limit 30000, Used 29000, Requested 2000. Please try
  again in 2.725s."
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.adapters.base import parse_retry_after

from .base import Limits, Route

WINDOWS = ("rpm", "rpd", "tpm", "tpd")
MINUTE = 60.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_WINDOW_WORDS = {
    "requests per minute": "rpm",
    "requests per day": "rpd",
    "tokens per minute": "tpm",
    "tokens per day": "tpd",
}
_WINDOW_TEXT = re.compile(
    r"\b(requests|tokens) per (minute|day)\b(?:\s*\((?:RPM|RPD|TPM|TPD)\))?|\((RPM|RPD|TPM|TPD)\)", re.I
)
_LIMIT_TEXT = re.compile(r"Limit\s*:?\s*(\d+)", re.I)
_USED_TEXT = re.compile(r"Used\s*:?\s*(\d+)", re.I)
_TRY_AGAIN_TEXT = re.compile(r"try again in\s+((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)", re.I)


def parse_duration(value: str | None) -> float | None:
    """Seconds from "2m59.56s", "7.66s", "1s", "120ms", "1h2m" or a bare number; None if unreadable."""
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


@dataclass
class Observation:
    learned: dict[str, int] = field(default_factory=dict)  # window → limit the provider reported
    used_floor: dict[str, int] = field(default_factory=dict)  # window → usage the provider reported
    exhausted: dict[str, float] = field(default_factory=dict)  # window → seconds until it reopens
    resets: dict[str, float] = field(default_factory=dict)  # window → the provider's own reset horizon
    retry_after: float | None = None  # explicit wait (header or "try again in")

    def __bool__(self) -> bool:
        return bool(self.learned or self.used_floor or self.exhausted or self.retry_after is not None)

    def floors(self, to_midnight: float) -> dict[str, int]:
        """The usage floors to charge. A day window whose provider resets it well before our midnight
        (Groq replenishes its RPD/TPD continuously) gets none: charging it into our calendar-day counter
        would keep that usage until midnight and leave quota unused; its exhaustion is handled by
        ``exhausted`` / the cooldown instead."""
        return {
            window: floor
            for window, floor in self.used_floor.items()
            if window.endswith("m") or self.resets.get(window, math.inf) >= to_midnight - MINUTE
        }


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number >= 0 else None


def _requests_window(route: Route, limit: int | None, reset: float | None) -> str:
    """Whether an unsuffixed x-ratelimit-*-requests header speaks of the minute or the day."""
    configured_rpm = route.limits.rpm
    if reset is not None and reset > MINUTE:
        return "rpd"
    if limit is not None and configured_rpm is not None and limit > configured_rpm:
        return "rpd"
    if limit is not None and configured_rpm is None and route.limits.rpd is not None and limit >= route.limits.rpd:
        return "rpd"
    return "rpm"


def _from_headers(route: Route, headers: Mapping[str, str], obs: Observation) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    for unit in ("requests", "tokens"):
        # Explicit windows first (Cerebras: -minute / -day), then the bare OpenAI/Groq headers.
        for suffix, window in (("-minute", unit[0] + "pm"), ("-day", unit[0] + "pd"), ("", None)):
            limit = _int(lower.get(f"x-ratelimit-limit-{unit}{suffix}"))
            remaining = _int(lower.get(f"x-ratelimit-remaining-{unit}{suffix}"))
            reset = parse_duration(lower.get(f"x-ratelimit-reset-{unit}{suffix}"))
            if limit is None and remaining is None:
                continue
            if window is None:
                window = _requests_window(route, limit, reset) if unit == "requests" else "tpm"
            if reset is not None:
                obs.resets[window] = reset
            if limit is not None and limit > 0:
                obs.learned[window] = limit
                if remaining is not None:
                    obs.used_floor[window] = max(0, limit - remaining)
            if remaining == 0:
                obs.exhausted[window] = reset if reset is not None else _default_reset(window)
    retry = parse_retry_after(headers)
    if retry is not None:
        obs.retry_after = retry


def _default_reset(window: str) -> float:
    # A day window's real reset (midnight in the provider's zone) is applied by the store.
    return MINUTE if window.endswith("m") else math.inf


def _from_message(message: str, obs: Observation) -> None:
    if not message:
        return
    window = None
    if m := _WINDOW_TEXT.search(message):
        if m.group(3):
            window = m.group(3).lower()
        else:
            window = _WINDOW_WORDS[f"{m.group(1).lower()} per {m.group(2).lower()}"]
    wait = None
    if m := _TRY_AGAIN_TEXT.search(message):
        wait = parse_duration(m.group(1))
    if window is None:
        if wait is not None and obs.retry_after is None:
            obs.retry_after = wait
        return
    limit = _LIMIT_TEXT.search(message)
    used = _USED_TEXT.search(message)
    if limit:
        obs.learned[window] = int(limit.group(1))
    if used:
        obs.used_floor[window] = max(obs.used_floor.get(window, 0), int(used.group(1)))
    if wait is not None:
        obs.resets[window] = wait
    if "rate limit" in message.lower() or (limit and used and int(used.group(1)) >= int(limit.group(1))):
        obs.exhausted[window] = wait if wait is not None else _default_reset(window)
    if wait is not None and obs.retry_after is None:
        obs.retry_after = wait


def observe(
    route: Route, headers: Mapping[str, str] | None, message: str = "", retry_after: float | None = None
) -> Observation:
    obs = Observation()
    if headers:
        _from_headers(route, headers, obs)
    _from_message(message, obs)
    if retry_after is not None:
        obs.retry_after = retry_after
    return obs


def effective_limits(configured: Limits, learned: Mapping[str, int]) -> dict[str, int | None]:
    """The tighter of the configured and the learned value of each window (None: unlimited)."""
    result: dict[str, int | None] = {}
    for window in WINDOWS:
        values = [v for v in (getattr(configured, window), learned.get(window)) if v is not None]
        result[window] = min(values) if values else None
    return result
