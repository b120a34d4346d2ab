"""In-process quota store: the embedded default (one gateway process) and the degraded-mode fallback.

Same semantics as the Redis store (routing/quota/redis.py has the design note); the state lives in dicts
guarded by a lock. Every public method does its whole check-and-update without awaiting, so concurrent
coroutines of one event loop can never interleave inside a reserve, and the lock covers threads (admin,
sync_to_async) too.

What is exact and what is an estimate:
- Requests: each reserve charges one request to the route's and the provider's minute and day windows;
  ``release`` (request never reached the provider) gives it back; nothing else does.
- Tokens: the estimate is charged at reserve time into the same windows; ``settle`` replaces it with the
  real usage in the buckets it was charged to (so an over-estimate frees tokens at once).
- A lease never settled (its process was killed) keeps its estimate charged: we cannot know what the
  dead request used, and the estimate (prompt + full output reserve) is an upper bound for most calls.
  The charge leaves the minute windows after 60-61 s like any other and stays in the day window. When
  the lease expires (``FREELLM_LEASE_TTL``) it stops holding the route's half-open trial slot.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from providers.adapters.base import ErrorKind

from . import policy
from .base import (
    LAST_ERROR_CHARS,
    Denied,
    DenyReason,
    HealthState,
    LastError,
    Lease,
    QuotaStore,
    Route,
    RouteStatus,
)
from .learning import WINDOWS, Observation, effective_limits, observe

# Errors after which the upstream evidently works (it understood and answered the request).
_ANSWERED = (ErrorKind.BAD_REQUEST, ErrorKind.BLOCKED, ErrorKind.CONTEXT_LENGTH)
_FAILURES = (ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.EMPTY)


@dataclass
class _Windows:
    """Per-second buckets for the minute windows and calendar-day counters: [requests, tokens]."""

    minute: dict[int, list[int]] = field(default_factory=dict)
    day: dict[str, list[int]] = field(default_factory=dict)

    def prune(self, now: float) -> None:
        oldest = int(now) - policy.MINUTE_SPAN
        for second in [s for s in self.minute if s < oldest]:
            del self.minute[second]
        if len(self.day) > 2:
            for day in sorted(self.day)[:-2]:
                del self.day[day]

    def used(self, now: float, day: str) -> tuple[int, int, int, int]:
        """(rpm, rpd, tpm, tpd) used, as of ``now``."""
        oldest = int(now) - policy.MINUTE_SPAN
        rpm = tpm = 0
        for second, (requests, tokens) in self.minute.items():
            if second >= oldest:
                rpm += requests
                tpm += tokens
        rpd, tpd = self.day.get(day, (0, 0))
        return rpm, rpd, tpm, tpd

    def in_window(self, now: float, index: int) -> list[tuple[int, int]]:
        oldest = int(now) - policy.MINUTE_SPAN
        return [(s, v[index]) for s, v in self.minute.items() if s >= oldest]

    def add(self, second: int, day: str, requests: int, tokens: int) -> None:
        self.add_minute(second, requests, tokens)
        self.add_day(day, requests, tokens)

    def add_minute(self, second: int, requests: int, tokens: int) -> None:
        bucket = self.minute.setdefault(second, [0, 0])
        bucket[0] = max(0, bucket[0] + requests)
        bucket[1] = max(0, bucket[1] + tokens)

    def add_day(self, day: str, requests: int, tokens: int) -> None:
        counter = self.day.setdefault(day, [0, 0])
        counter[0] = max(0, counter[0] + requests)
        counter[1] = max(0, counter[1] + tokens)

    def adjust(self, second: int, day: str, requests: int, tokens: int) -> None:
        """Like add, but leaves alone a bucket that has already been pruned (out of the window anyway)."""
        if second in self.minute:
            bucket = self.minute[second]
            bucket[0] = max(0, bucket[0] + requests)
            bucket[1] = max(0, bucket[1] + tokens)
        if day in self.day:
            counter = self.day[day]
            counter[0] = max(0, counter[0] + requests)
            counter[1] = max(0, counter[1] + tokens)


@dataclass
class _RouteState:
    windows: _Windows = field(default_factory=_Windows)
    learned: dict[str, int] = field(default_factory=dict)
    learned_at: float = 0.0
    open: bool = False
    cooldown_until: float = 0.0
    failures: int = 0
    level: int = 0  # how many failure openings in a row (the escalation ladder)
    trial: str | None = None  # lease id of the half-open trial in flight
    trial_until: float = 0.0
    exhausted_until: float = 0.0  # a window the provider reported empty
    exhausted_reason: str = ""
    last_success_at: float | None = None
    last_error: LastError | None = None


@dataclass
class _LeaseRecord:
    route: Route
    second: int
    day: str
    tokens: int
    expires_at: float
    keep_until: float


class LocalQuotaStore(QuotaStore):
    backend = "local"

    def __init__(
        self,
        *,
        lease_ttl: float | None = None,
        now: Callable[[], float] = time.time,
        key_invalid_ttl: float | None = None,
    ) -> None:
        """``key_invalid_ttl``: forget an auth failure after this long (None: until cleared). The embedded
        setup sets it because there the health probe runs in the worker process and can only revive a key
        through its database status; the router leaves keys marked invalid there out anyway."""
        self.key_invalid_ttl = key_invalid_ttl
        if lease_ttl is None:
            from django.conf import settings

            lease_ttl = settings.FREELLM_LEASE_TTL
        self.lease_ttl = float(lease_ttl)
        self.now = now
        self._lock = threading.Lock()
        self._routes: dict[str, _RouteState] = {}
        self._providers: dict[str, _Windows] = {}
        self._invalid_keys: dict[str, float] = {}  # key_id → since
        self._leases: dict[str, _LeaseRecord] = {}
        self._pruned_at = 0.0

    # --- the QuotaStore interface ---------------------------------------------------------------------

    async def reserve(self, route: Route, tokens: int) -> Lease | Denied:
        return self.reserve_now(route, tokens)

    async def settle(self, lease: Lease, used_tokens: int) -> None:
        self.settle_now(lease, used_tokens)

    async def release(self, lease: Lease) -> None:
        self.release_now(lease)

    async def record(
        self,
        route: Route,
        error: ErrorKind | None,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        message: str = "",
    ) -> None:
        self.record_now(route, error, retry_after=retry_after, headers=headers, message=message)

    async def status(self, route: Route) -> RouteStatus:
        return self.status_now(route)

    async def clear_cooldown(self, route: Route) -> None:
        self.clear_cooldown_now(route)

    async def headroom(self, route: Route) -> float:
        return self.headroom_now(route)

    # --- synchronous core (also used by the degraded-mode wrapper and the admin) ------------------------

    def reserve_now(self, route: Route, tokens: int) -> Lease | Denied:
        tokens = max(0, int(tokens))
        with self._lock:
            now = self.now()
            self._maybe_prune(now)
            state = self._routes.setdefault(route.id, _RouteState())
            provider = self._providers.setdefault(route.provider, _Windows())
            day = policy.day_id(now, route.daily_reset_tz)

            if self._key_invalid(route, now):
                return Denied(DenyReason.KEY_INVALID, policy.KEY_INVALID_RETRY)
            trial = False
            if state.open:
                if now < state.cooldown_until:
                    return Denied(DenyReason.COOLDOWN, state.cooldown_until - now)
                if state.trial is not None and now < state.trial_until:
                    return Denied(DenyReason.HALF_OPEN, state.trial_until - now)
                trial = True
            if now < state.exhausted_until:
                return Denied(DenyReason(state.exhausted_reason or DenyReason.RPM), state.exhausted_until - now)

            denied = self._check(route, state, provider, tokens, now, day)
            if denied is not None:
                return denied

            second = int(now)
            state.windows.add(second, day, 1, tokens)
            provider.add(second, day, 1, 0)
            lease = Lease(uuid.uuid4().hex, route.id, tokens, now + self.lease_ttl)
            self._leases[lease.id] = _LeaseRecord(
                route, second, day, tokens, lease.expires_at, now + max(self.lease_ttl, policy.DAY_TTL)
            )
            if trial:
                state.trial = lease.id
                state.trial_until = lease.expires_at
            return lease

    def _check(
        self, route: Route, state: _RouteState, provider: _Windows, tokens: int, now: float, day: str
    ) -> Denied | None:
        limits = effective_limits(route.limits, self._learned(state, now))
        rpm, rpd, tpm, tpd = state.windows.used(now, day)
        p_rpm, p_rpd, _, _ = provider.used(now, day)
        to_midnight = policy.seconds_to_midnight(now, route.daily_reset_tz)
        refusals: list[Denied] = []

        def minute(reason: DenyReason, windows: _Windows, index: int, used: int, limit: int | None, amount: int) -> None:
            if limit is None or used + amount <= limit:
                return
            if amount > limit:
                # Bigger than the whole window: it will never fit here.
                refusals.append(Denied(reason, float(policy.MINUTE_SPAN)))
                return
            refusals.append(Denied(reason, policy.minute_retry(windows.in_window(now, index), used + amount - limit, now)))

        def daily(reason: DenyReason, used: int, limit: int | None, amount: int) -> None:
            if limit is not None and used + amount > limit:
                refusals.append(Denied(reason, to_midnight))

        minute(DenyReason.RPM, state.windows, 0, rpm, limits["rpm"], 1)
        daily(DenyReason.RPD, rpd, limits["rpd"], 1)
        if tokens:
            minute(DenyReason.TPM, state.windows, 1, tpm, limits["tpm"], tokens)
            daily(DenyReason.TPD, tpd, limits["tpd"], tokens)
        minute(DenyReason.PROVIDER_RPM, provider, 0, p_rpm, route.provider_limits.rpm, 1)
        daily(DenyReason.PROVIDER_RPD, p_rpd, route.provider_limits.rpd, 1)
        if not refusals:
            return None
        return max(refusals, key=lambda d: d.retry_after)

    def settle_now(self, lease: Lease, used_tokens: int) -> None:
        with self._lock:
            record = self._leases.pop(lease.id, None)
            if record is None:
                return
            state = self._routes.get(record.route.id)
            if state is not None:
                state.windows.adjust(record.second, record.day, 0, max(0, int(used_tokens)) - record.tokens)

    def release_now(self, lease: Lease) -> None:
        with self._lock:
            record = self._leases.pop(lease.id, None)
            if record is None:
                return
            state = self._routes.get(record.route.id)
            if state is not None:
                state.windows.adjust(record.second, record.day, -1, -record.tokens)
                if state.trial == lease.id:
                    state.trial = None
            provider = self._providers.get(record.route.provider)
            if provider is not None:
                provider.adjust(record.second, record.day, -1, 0)

    def record_now(
        self,
        route: Route,
        error: ErrorKind | None,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        message: str = "",
    ) -> None:
        obs = observe(route, headers, message, retry_after)
        with self._lock:
            now = self.now()
            state = self._routes.setdefault(route.id, _RouteState())
            self._apply_observation(route, state, obs, now)
            if error is None:
                state.last_success_at = now
            else:
                state.last_error = LastError(now, error.value, message[:LAST_ERROR_CHARS])
            if error is None:
                self._invalid_keys.pop(route.key_id, None)
                self._close(state)
            elif error in _ANSWERED:
                self._close(state)
            elif error == ErrorKind.RATE_LIMITED:
                wait = self._rate_limit_wait(route, state, obs, now)
                state.open = True
                state.cooldown_until = max(state.cooldown_until, now + wait)
                state.trial = None
            elif error in _FAILURES:
                state.failures += 1
                cooling = state.open and now < state.cooldown_until
                # A failure while already cooling is a request that left before the circuit opened.
                if not cooling and (state.open or state.failures >= policy.FAILURE_THRESHOLD):
                    state.open = True
                    state.cooldown_until = now + policy.failure_cooldown(state.level)
                    state.level += 1
                    state.trial = None
            elif error == ErrorKind.AUTH:
                self._invalid_keys.setdefault(route.key_id, now)
                state.trial = None
            else:
                # NOT_FOUND: says nothing about the route's health; just free a trial slot.
                state.trial = None

    def _apply_observation(self, route: Route, state: _RouteState, obs: Observation, now: float) -> None:
        if not obs:
            return
        if obs.learned:
            state.learned.update(obs.learned)
            state.learned_at = now
        day = policy.day_id(now, route.daily_reset_tz)
        used = dict(zip(WINDOWS, state.windows.used(now, day), strict=True))
        for window, floor in obs.floors(policy.seconds_to_midnight(now, route.daily_reset_tz)).items():
            missing = floor - used[window]
            if missing > 0:
                # Someone else spent this key too: charge the difference now so our windows agree.
                requests, tokens = (missing, 0) if window.startswith("r") else (0, missing)
                if window.endswith("m"):
                    state.windows.add_minute(int(now), requests, tokens)
                else:
                    state.windows.add_day(day, requests, tokens)
        for window, seconds in obs.exhausted.items():
            until = now + policy.resolve_wait(seconds, now, route.daily_reset_tz)
            if until > state.exhausted_until:
                state.exhausted_until = until
                state.exhausted_reason = window

    def _rate_limit_wait(self, route: Route, state: _RouteState, obs: Observation, now: float) -> float:
        if obs.retry_after is not None:
            return obs.retry_after
        if obs.exhausted:
            return max(policy.resolve_wait(s, now, route.daily_reset_tz) for s in obs.exhausted.values())
        # Nothing said: if our own counters show a day window full, wait for midnight.
        day = policy.day_id(now, route.daily_reset_tz)
        _, rpd, _, tpd = state.windows.used(now, day)
        limits = effective_limits(route.limits, self._learned(state, now))
        if (limits["rpd"] is not None and rpd >= limits["rpd"]) or (limits["tpd"] is not None and tpd >= limits["tpd"]):
            return policy.seconds_to_midnight(now, route.daily_reset_tz)
        return policy.DEFAULT_RATE_LIMIT_COOLDOWN

    @staticmethod
    def _close(state: _RouteState) -> None:
        state.open = False
        state.cooldown_until = 0.0
        state.failures = 0
        state.level = 0
        state.trial = None

    def _learned(self, state: _RouteState, now: float) -> dict[str, int]:
        if state.learned and now - state.learned_at > policy.LEARNED_TTL:
            state.learned.clear()
        return state.learned

    def status_now(self, route: Route) -> RouteStatus:
        with self._lock:
            now = self.now()
            state = self._routes.get(route.id, _RouteState())
            provider = self._providers.get(route.provider, _Windows())
            day = policy.day_id(now, route.daily_reset_tz)
            used = dict(zip(WINDOWS, state.windows.used(now, day), strict=True))
            p_rpm, p_rpd, _, _ = provider.used(now, day)
            used["provider_rpm"] = p_rpm
            used["provider_rpd"] = p_rpd
            invalid = self._key_invalid(route, now)
            return RouteStatus(
                health=_health(state, invalid, now),
                cooldown_until=state.cooldown_until if state.open else None,
                failures=state.failures,
                used=used,
                learned=dict(self._learned(state, now)),
                limits=effective_limits(route.limits, state.learned),
                key_invalid=invalid,
                exhausted_until=state.exhausted_until if state.exhausted_until > now else None,
                exhausted_reason=state.exhausted_reason if state.exhausted_until > now else "",
                last_success_at=state.last_success_at,
                last_error=state.last_error,
            )

    def clear_cooldown_now(self, route: Route) -> None:
        with self._lock:
            self._invalid_keys.pop(route.key_id, None)
            state = self._routes.get(route.id)
            if state is not None:
                self._close(state)
                state.exhausted_until = 0.0
                state.exhausted_reason = ""

    async def set_key_invalid(self, route: Route, invalid: bool) -> None:
        with self._lock:
            if invalid:
                self._invalid_keys.setdefault(route.key_id, self.now())
            else:
                self._invalid_keys.pop(route.key_id, None)

    def _key_invalid(self, route: Route, now: float) -> bool:
        since = self._invalid_keys.get(route.key_id)
        if since is None:
            return False
        if self.key_invalid_ttl is not None and now - since > self.key_invalid_ttl:
            del self._invalid_keys[route.key_id]
            return False
        return True

    def headroom_now(self, route: Route) -> float:
        with self._lock:
            now = self.now()
            if self._key_invalid(route, now):
                return 0.0
            state = self._routes.get(route.id)
            if state is None:
                return 1.0
            if (state.open and now < state.cooldown_until) or now < state.exhausted_until:
                return 0.0
            day = policy.day_id(now, route.daily_reset_tz)
            used = dict(zip(WINDOWS, state.windows.used(now, day), strict=True))
            limits = effective_limits(route.limits, self._learned(state, now))
            return _headroom(used, limits)

    # --- housekeeping ---------------------------------------------------------------------------------

    def owns(self, lease: Lease) -> bool:
        with self._lock:
            return lease.id in self._leases

    def purge(self) -> int:
        """Drop expired lease records and idle route state. Returns how many leases were dropped."""
        with self._lock:
            return self._prune(self.now())

    def _maybe_prune(self, now: float) -> None:
        if now - self._pruned_at >= policy.MINUTE_SPAN:
            self._prune(now)

    def _prune(self, now: float) -> int:
        self._pruned_at = now
        stale = [lid for lid, rec in self._leases.items() if rec.keep_until <= now]
        for lid in stale:
            del self._leases[lid]
        for windows in [s.windows for s in self._routes.values()] + list(self._providers.values()):
            windows.prune(now)
        return len(stale)


def _health(state: _RouteState, key_invalid: bool, now: float) -> HealthState:
    if key_invalid:
        return HealthState.KEY_INVALID
    if not state.open:
        return HealthState.CLOSED
    return HealthState.OPEN if now < state.cooldown_until else HealthState.HALF_OPEN


def _headroom(used: Mapping[str, int], limits: Mapping[str, int | None]) -> float:
    fractions = [1.0 - used[w] / limit for w, limit in limits.items() if limit]
    if any(limit == 0 for limit in limits.values()):
        return 0.0
    return max(0.0, min(fractions)) if fractions else 1.0

