"""Redis quota store: one set of counters shared by every gateway process.

Design note
-----------
Windows. Per route (provider, model, key) we keep requests and tokens in two kinds of window:

- minute windows (RPM, TPM): per-second buckets in a hash (``...:mr`` / ``...:mt``, field = unix second).
  The window at time ``now`` is the sum of the buckets of seconds ``floor(now)-60 .. floor(now)``: 61
  buckets, so a charge is counted for at least 60 and at most 61 seconds. Any real 60-second interval
  [t, t+60) therefore still sees every charge made inside it when its last request is checked, so it can
  never hold more than the limit. A fixed per-minute counter would let 30 requests at 12:00:59.9 and 30 more
  at 12:01:00.1 through a 30 RPM limit (60 in 0.2 s); here the second 30 see the first 30 for another 60 s.
  The price is being up to one second conservative.
- day windows (RPD, TPD): one counter per calendar day of the provider's reset zone (``...:d:2026-11-24``),
  because that is how the providers count: at midnight (UTC, or Pacific for Gemini) everything is back.
  The day id and the seconds to midnight are computed in Python (zoneinfo) and passed to the script.

Provider-wide caps (OpenRouter's account RPD, NVIDIA's 40 RPM) are the same windows keyed by provider.

The Lua scripts. Every reserve is ONE script (EVALSHA of a registered script): it checks the key's auth
state, the route's circuit breaker (open / half-open trial), a window the provider reported empty, then
all six windows against the effective limits (min of configured and learned, the learned ones read inside
the script), and only if everything passes charges all of them and writes the lease. Redis runs a script
to the end before anything else, so two processes can never both pass the same check: there is no gap
between "read the counters" and "increment them". ``settle`` / ``release`` / ``record`` are scripts too,
so a correction or a breaker transition is never half applied. Time comes from the caller (``now``
argument; gateway hosts must keep NTP time): tests drive it, and all processes agree on bucket seconds.

Leases. A lease record (hash with the exact bucket it charged, TTL ~2 days) lets ``settle`` replace the
estimate with the real usage in the very buckets that hold it, so an over-estimate frees tokens at once.
A lease whose process died is never settled: its estimate stays charged (an upper bound of what it used),
leaves the minute windows after 60-61 s, stays in the day window, and stops holding a half-open trial
slot at ``expires_at`` (FREELLM_LEASE_TTL).

Keys (all ``freellm:q:`` + ...; every key has a TTL except a disabled key's flag, which waits for an admin
or a probe): ``r:<provider|model|key>:{mr,mt,d:<day>,h,l}``, ``p:<provider>:{mr,d:<day>}``,
``k:<provider|key>`` and ``lease:<id>``. Single Redis (no Cluster): the lease scripts read bucket names
stored in the lease record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from providers.adapters.base import ErrorKind
from routing.redis import redis_client, redis_client_close, run_scripts

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
from .learning import WINDOWS, effective_limits, observe

PREFIX = "freellm:q:"
MINUTE_KEY_TTL = 3 * policy.MINUTE_SPAN

# Shared by the scripts: sum a minute hash over the live buckets, dropping the dead ones.
_LUA_COMMON = r"""
local function window(key, oldest)
  local flat = redis.call('HGETALL', key)
  local total, buckets, stale = 0, {}, {}
  for i = 1, #flat, 2 do
    local s, v = tonumber(flat[i]), tonumber(flat[i + 1])
    if s < oldest then stale[#stale + 1] = flat[i] else total = total + v; buckets[#buckets + 1] = {s, v} end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return total, buckets
end
local function effective(conf, learned)
  conf = tonumber(conf)
  learned = tonumber(learned)
  if conf and conf < 0 then conf = nil end
  if conf and learned then return math.min(conf, learned) end
  return conf or learned
end
local function num(v) return tonumber(v) or 0 end
local function fmt(n) return string.format('%.6f', n) end
"""

# KEYS: 1 r:mr 2 r:mt 3 r:d:<day> 4 r:h 5 r:l 6 p:mr 7 p:d:<day> 8 k 9 lease
# ARGV: 1 now 2 lease id 3 tokens 4 lease ttl 5..8 rpm rpd tpm tpd 9 provider rpm 10 provider rpd (-1: none)
#       11 seconds to midnight 12 minute span 13 day ttl 14 key-invalid retry 15 route id 16 minute key ttl
#       17 learned ttl (learned limits older than this are ignored)
# Returns named fields (a flat key/value list, read by _fields): granted=1, lease, expires_at; or
# granted=0, reason, retry_after.
_RESERVE = _LUA_COMMON + r"""
local function denied(reason, retry) return {'granted', 0, 'reason', reason, 'retry_after', retry} end
local now = tonumber(ARGV[1])
local sec = math.floor(now)
local span = tonumber(ARGV[12])
local oldest = sec - span
local tokens = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[8]) == 1 then return denied('key_invalid', ARGV[14]) end
local h = redis.call('HMGET', KEYS[4], 'open', 'until', 'trial', 'trial_until', 'ex_until', 'ex_reason')
local trial = false
if h[1] == '1' then
  local untl = num(h[2])
  if now < untl then return denied('cooldown', fmt(untl - now)) end
  if h[3] and h[3] ~= '' and now < num(h[4]) then return denied('half_open', fmt(num(h[4]) - now)) end
  trial = true
end
if now < num(h[5]) then return denied(h[6] or 'rpm', fmt(num(h[5]) - now)) end

local learned = {}
local l = redis.call('HMGET', KEYS[5], 'rpm', 'rpd', 'tpm', 'tpd', 'at')
if l[5] and now - num(l[5]) <= tonumber(ARGV[17]) then learned = {l[1], l[2], l[3], l[4]} end
local rpm = effective(ARGV[5], learned[1])
local rpd = effective(ARGV[6], learned[2])
local tpm = effective(ARGV[7], learned[3])
local tpd = effective(ARGV[8], learned[4])
local prpm = effective(ARGV[9], nil)
local prpd = effective(ARGV[10], nil)
local to_midnight = tonumber(ARGV[11])

local best_reason, best_retry = nil, -1
local function refuse(reason, retry)
  if retry > best_retry then best_reason, best_retry = reason, retry end
end
local function minute(reason, key, limit, amount)
  if not limit then return end
  local used, buckets = window(key, oldest)
  if used + amount <= limit then return end
  if amount > limit then refuse(reason, span); return end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  local excess, freed = used + amount - limit, 0
  for _, b in ipairs(buckets) do
    freed = freed + b[2]
    if freed >= excess then refuse(reason, math.max(0, b[1] + span + 1 - now)); return end
  end
  refuse(reason, span)
end
local function daily(reason, key, field, limit, amount)
  if limit and num(redis.call('HGET', key, field)) + amount > limit then refuse(reason, to_midnight) end
end
minute('rpm', KEYS[1], rpm, 1)
daily('rpd', KEYS[3], 'r', rpd, 1)
if tokens > 0 then
  minute('tpm', KEYS[2], tpm, tokens)
  daily('tpd', KEYS[3], 't', tpd, tokens)
end
minute('provider_rpm', KEYS[6], prpm, 1)
daily('provider_rpd', KEYS[7], 'r', prpd, 1)
if best_reason then return denied(best_reason, fmt(best_retry)) end

local field = string.format('%d', sec)
local minute_ttl = tonumber(ARGV[16])
local day_ttl = tonumber(ARGV[13])
redis.call('HINCRBY', KEYS[1], field, 1)
redis.call('EXPIRE', KEYS[1], minute_ttl)
-- even 0 tokens: settle adds the real usage to this very field
redis.call('HINCRBY', KEYS[2], field, tokens)
redis.call('EXPIRE', KEYS[2], minute_ttl)
redis.call('HINCRBY', KEYS[3], 'r', 1)
redis.call('HINCRBY', KEYS[3], 't', tokens)
redis.call('EXPIRE', KEYS[3], day_ttl)
redis.call('HINCRBY', KEYS[6], field, 1)
redis.call('EXPIRE', KEYS[6], minute_ttl)
redis.call('HINCRBY', KEYS[7], 'r', 1)
redis.call('EXPIRE', KEYS[7], day_ttl)
local expires = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[9], 'route', ARGV[15], 'sec', field, 'tokens', tokens, 'mr', KEYS[1], 'mt', KEYS[2],
  'dk', KEYS[3], 'pmr', KEYS[6], 'pdk', KEYS[7], 'h', KEYS[4])
redis.call('EXPIRE', KEYS[9], math.max(day_ttl, tonumber(ARGV[4])))
if trial then
  redis.call('HSET', KEYS[4], 'trial', ARGV[2], 'trial_until', fmt(expires))
  redis.call('EXPIRE', KEYS[4], day_ttl)
end
return {'granted', 1, 'lease', ARGV[2], 'expires_at', fmt(expires)}
"""

# Adds `delta` to a bucket that still exists, never below zero.
_LUA_ADJUST = r"""
local function adjust(key, field, delta)
  if delta == 0 or redis.call('HEXISTS', key, field) == 0 then return end
  if redis.call('HINCRBY', key, field, delta) < 0 then redis.call('HSET', key, field, 0) end
end
"""

# KEYS: 1 lease. ARGV: 1 used tokens
_SETTLE = _LUA_ADJUST + r"""
local l = redis.call('HMGET', KEYS[1], 'mt', 'sec', 'dk', 'tokens')
if not l[1] then return 0 end
redis.call('DEL', KEYS[1])
local delta = tonumber(ARGV[1]) - tonumber(l[4])
if delta ~= 0 then
  adjust(l[1], l[2], delta)
  adjust(l[3], 't', delta)
end
return 1
"""

# KEYS: 1 lease. ARGV: 1 lease id
_RELEASE = _LUA_ADJUST + r"""
local l = redis.call('HMGET', KEYS[1], 'mr', 'mt', 'sec', 'dk', 'tokens', 'pmr', 'pdk', 'h')
if not l[1] then return 0 end
redis.call('DEL', KEYS[1])
local tokens = tonumber(l[5])
adjust(l[1], l[3], -1)
adjust(l[2], l[3], -tokens)
adjust(l[4], 'r', -1)
adjust(l[4], 't', -tokens)
adjust(l[6], l[3], -1)
adjust(l[7], 'r', -1)
if redis.call('HGET', l[8], 'trial') == ARGV[1] then redis.call('HDEL', l[8], 'trial', 'trial_until') end
return 1
"""

# KEYS: 1 r:mr 2 r:mt 3 r:d:<day> 4 r:h 5 r:l 6 k
# ARGV: 1 now 2 outcome (ok|answered|rate|failure|auth|neutral) 3 minute span 4 day ttl 5 learned ttl
#       6..9 learned rpm rpd tpm tpd ('' = not seen) 10..13 used floors rpm rpd tpm tpd ('' = none)
#       14 exhausted reason ('' = none) 15 exhausted until 16 explicit rate-limit wait (-1 = none)
#       17 seconds to midnight 18 default 429 wait 19 failure threshold 20.. failure cooldowns
#       then: configured rpd, tpd (-1 = none), and the error's kind and message ('' for a success) as the
#       last four arguments
_RECORD = _LUA_COMMON + r"""
local now = tonumber(ARGV[1])
local outcome = ARGV[2]
local span = tonumber(ARGV[3])
local day_ttl = tonumber(ARGV[4])
local sec = math.floor(now)
local field = string.format('%d', sec)
local n = #ARGV - 2
local conf_rpd, conf_tpd = ARGV[n - 1], ARGV[n]
-- The route's last success and last error, for the routing-state API (in the health hash: no extra key).
if outcome == 'ok' then
  redis.call('HSET', KEYS[4], 'last_ok', ARGV[1])
elseif ARGV[n + 1] ~= '' then
  redis.call('HSET', KEYS[4], 'err_at', ARGV[1], 'err_kind', ARGV[n + 1], 'err_msg', ARGV[n + 2])
end

local names = {'rpm', 'rpd', 'tpm', 'tpd'}
local learned_any = false
for i = 1, 4 do
  if ARGV[5 + i] ~= '' then
    redis.call('HSET', KEYS[5], names[i], ARGV[5 + i]); learned_any = true
  end
end
if learned_any then
  redis.call('HSET', KEYS[5], 'at', ARGV[1])
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[5]))
end
-- Usage the provider reports beyond ours (someone else spent the key): charge the difference now.
for i = 1, 4 do
  local floor = tonumber(ARGV[9 + i])
  if floor then
    local used
    if i == 1 or i == 3 then
      local key = (i == 1) and KEYS[1] or KEYS[2]
      used = window(key, sec - span)
      if floor > used then
        redis.call('HINCRBY', key, field, floor - used)
        redis.call('EXPIRE', key, 3 * span)
      end
    else
      local f = (i == 2) and 'r' or 't'
      used = num(redis.call('HGET', KEYS[3], f))
      if floor > used then
        redis.call('HINCRBY', KEYS[3], f, floor - used)
        redis.call('EXPIRE', KEYS[3], day_ttl)
      end
    end
  end
end
if ARGV[14] ~= '' then
  local untl = tonumber(ARGV[15])
  if untl > num(redis.call('HGET', KEYS[4], 'ex_until')) then
    redis.call('HSET', KEYS[4], 'ex_until', ARGV[15], 'ex_reason', ARGV[14])
  end
end

local function close()
  redis.call('HSET', KEYS[4], 'open', '0', 'until', '0', 'failures', '0', 'level', '0')
  redis.call('HDEL', KEYS[4], 'trial', 'trial_until')
end
if outcome == 'ok' then
  redis.call('DEL', KEYS[6])
  close()
elseif outcome == 'answered' then
  close()
elseif outcome == 'rate' then
  local wait = tonumber(ARGV[16])
  if wait < 0 then
    wait = tonumber(ARGV[18])
    local l = redis.call('HMGET', KEYS[5], 'rpd', 'tpd', 'at')
    if not (l[3] and now - num(l[3]) <= tonumber(ARGV[5])) then l = {} end
    local rpd = effective(conf_rpd, l[1])
    local tpd = effective(conf_tpd, l[2])
    local d = redis.call('HMGET', KEYS[3], 'r', 't')
    if (rpd and num(d[1]) >= rpd) or (tpd and num(d[2]) >= tpd) then wait = tonumber(ARGV[17]) end
  end
  local untl = math.max(num(redis.call('HGET', KEYS[4], 'until')), now + wait)
  redis.call('HSET', KEYS[4], 'open', '1', 'until', fmt(untl))
  redis.call('HDEL', KEYS[4], 'trial', 'trial_until')
elseif outcome == 'failure' then
  local h = redis.call('HMGET', KEYS[4], 'open', 'until', 'failures', 'level')
  local failures = num(h[3]) + 1
  redis.call('HSET', KEYS[4], 'failures', failures)
  local is_open = h[1] == '1'
  local cooling = is_open and now < num(h[2])
  if not cooling and (is_open or failures >= tonumber(ARGV[19])) then
    local level = num(h[4])
    local ladder = n - 2 - 19
    local cooldown = tonumber(ARGV[19 + math.min(level + 1, ladder)])
    redis.call('HSET', KEYS[4], 'open', '1', 'until', fmt(now + cooldown), 'level', level + 1)
    redis.call('HDEL', KEYS[4], 'trial', 'trial_until')
  end
elseif outcome == 'auth' then
  if redis.call('EXISTS', KEYS[6]) == 0 then redis.call('SET', KEYS[6], ARGV[1]) end
  redis.call('HDEL', KEYS[4], 'trial', 'trial_until')
else
  redis.call('HDEL', KEYS[4], 'trial', 'trial_until')
end
redis.call('EXPIRE', KEYS[4], day_ttl)
return 1
"""

# KEYS: 1 r:mr 2 r:mt 3 r:d:<day> 4 r:h 5 r:l 6 p:mr 7 p:d:<day> 8 k. ARGV: 1 now 2 minute span 3 learned ttl
# Returns named fields (a flat key/value list) that _Inspection.from_reply reads.
_INSPECT = _LUA_COMMON + r"""
local now = tonumber(ARGV[1])
local oldest = math.floor(now) - tonumber(ARGV[2])
local rpm = window(KEYS[1], oldest)
local tpm = window(KEYS[2], oldest)
local prpm = window(KEYS[6], oldest)
local d = redis.call('HMGET', KEYS[3], 'r', 't')
local pd = redis.call('HGET', KEYS[7], 'r')
local h = redis.call('HMGET', KEYS[4], 'open', 'until', 'failures', 'trial', 'trial_until', 'ex_until', 'ex_reason',
  'last_ok', 'err_at', 'err_kind', 'err_msg')
local l = redis.call('HMGET', KEYS[5], 'rpm', 'rpd', 'tpm', 'tpd', 'at')
if not (l[5] and now - num(l[5]) <= tonumber(ARGV[3])) then l = {false, false, false, false} end
return {'rpm', rpm, 'rpd', num(d[1]), 'tpm', tpm, 'tpd', num(d[2]), 'provider_rpm', prpm, 'provider_rpd', num(pd),
  'open', h[1] or '0', 'until', h[2] or '0', 'failures', h[3] or '0',
  'ex_until', h[6] or '0', 'ex_reason', h[7] or '', 'key_invalid', redis.call('EXISTS', KEYS[8]),
  'last_ok', h[8] or '0', 'err_at', h[9] or '0', 'err_kind', h[10] or '', 'err_msg', h[11] or '',
  'learned_rpm', l[1] or '', 'learned_rpd', l[2] or '', 'learned_tpm', l[3] or '', 'learned_tpd', l[4] or ''}
"""

class _Outcome(StrEnum):
    """What ``record`` tells the script an attempt meant for the route's circuit (the _RECORD branches)."""

    OK = "ok"  # closes the circuit and clears a key-invalid mark
    ANSWERED = "answered"  # the provider is fine, the request was not: closes the circuit
    RATE = "rate"  # opens the circuit until the window resets
    FAILURE = "failure"  # counts towards opening, escalating the cooldown
    AUTH = "auth"  # marks the key invalid
    NEUTRAL = "neutral"  # says nothing about the route; frees a trial slot


_OUTCOMES = {
    None: _Outcome.OK,
    ErrorKind.BAD_REQUEST: _Outcome.ANSWERED,
    ErrorKind.BLOCKED: _Outcome.ANSWERED,
    ErrorKind.CONTEXT_LENGTH: _Outcome.ANSWERED,
    ErrorKind.RATE_LIMITED: _Outcome.RATE,
    ErrorKind.SERVER: _Outcome.FAILURE,
    ErrorKind.TIMEOUT: _Outcome.FAILURE,
    ErrorKind.CONNECTION: _Outcome.FAILURE,
    ErrorKind.EMPTY: _Outcome.FAILURE,
    ErrorKind.AUTH: _Outcome.AUTH,
}


def _fields(reply: list) -> dict[str, Any]:
    """A script's flat key/value reply as a dict: the one place script results are read."""
    return dict(zip(reply[::2], reply[1::2], strict=True))


@dataclass(frozen=True)
class _Inspection:
    """What _INSPECT read about a route, by name."""

    now: float
    used: dict[str, int]  # rpm, rpd, tpm, tpd, provider_rpm, provider_rpd
    is_open: bool
    until: float
    failures: int
    exhausted_until: float
    exhausted_reason: str
    key_invalid: bool
    learned: dict[str, int]
    last_success_at: float
    last_error: LastError | None

    @classmethod
    def from_reply(cls, now: float, reply: list) -> _Inspection:
        f = _fields(reply)
        return cls(
            now=now,
            used={w: int(f[w]) for w in (*WINDOWS, "provider_rpm", "provider_rpd")},
            is_open=f["open"] == "1",
            until=float(f["until"]),
            failures=int(f["failures"]),
            exhausted_until=float(f["ex_until"]),
            exhausted_reason=f["ex_reason"],
            key_invalid=int(f["key_invalid"]) == 1,
            learned={w: int(f[f"learned_{w}"]) for w in WINDOWS if f[f"learned_{w}"] != ""},
            last_success_at=float(f["last_ok"]),
            last_error=LastError(float(f["err_at"]), f["err_kind"], f["err_msg"]) if f["err_kind"] else None,
        )

    @property
    def health(self) -> HealthState:
        if self.key_invalid:
            return HealthState.KEY_INVALID
        if not self.is_open:
            return HealthState.CLOSED
        return HealthState.OPEN if self.now < self.until else HealthState.HALF_OPEN


def _limit_arg(value: int | None) -> int:
    return -1 if value is None else int(value)


class _Scripts:
    """The registered scripts (their SHA). Called with this loop's client: connections belong to a loop."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.reserve = client.register_script(_RESERVE)
        self.settle = client.register_script(_SETTLE)
        self.release = client.register_script(_RELEASE)
        self.record = client.register_script(_RECORD)
        self.inspect = client.register_script(_INSPECT)


class RedisQuotaStore(QuotaStore):
    backend = "redis"

    def __init__(self, url: str, *, lease_ttl: float | None = None, now: Callable[[], float] = time.time) -> None:
        if lease_ttl is None:
            from django.conf import settings

            lease_ttl = settings.FREELLM_LEASE_TTL
        self.url = url
        self.lease_ttl = float(lease_ttl)
        self.now = now
        self._scripts: _Scripts | None = None

    def _client(self) -> aioredis.Redis:
        return redis_client(self.url)

    def _scripts_of(self, client: aioredis.Redis) -> _Scripts:
        if self._scripts is None:
            self._scripts = _Scripts(client)
        return self._scripts

    async def _run(self, script: str, keys: list[str], args: list) -> object:
        client = self._client()
        return await getattr(self._scripts_of(client), script)(keys=keys, args=args, client=client)

    async def aclose(self) -> None:
        """Close this event loop's connections (tests; short-lived loops of sync callers)."""
        await redis_client_close(self.url)

    @staticmethod
    def _route_keys(route: Route, day: str) -> list[str]:
        r = f"{PREFIX}r:{route.id}"
        p = f"{PREFIX}p:{route.provider}"
        return [f"{r}:mr", f"{r}:mt", f"{r}:d:{day}", f"{r}:h", f"{r}:l", f"{p}:mr", f"{p}:d:{day}", f"{PREFIX}k:{route.key_id}"]

    async def reserve(self, route: Route, tokens: int) -> Lease | Denied:
        now = self.now()
        day = policy.day_id(now, route.daily_reset_tz)
        lease_id = uuid.uuid4().hex
        keys = self._route_keys(route, day) + [f"{PREFIX}lease:{lease_id}"]
        limits, plimits = route.limits, route.provider_limits
        args = [
            repr(now), lease_id, max(0, int(tokens)), repr(self.lease_ttl),
            _limit_arg(limits.rpm), _limit_arg(limits.rpd), _limit_arg(limits.tpm), _limit_arg(limits.tpd),
            _limit_arg(plimits.rpm), _limit_arg(plimits.rpd),
            repr(policy.seconds_to_midnight(now, route.daily_reset_tz)), policy.MINUTE_SPAN, policy.DAY_TTL,
            repr(policy.KEY_INVALID_RETRY), route.id, MINUTE_KEY_TTL, policy.LEARNED_TTL,
        ]  # fmt: skip
        result = _fields(await self._run("reserve", keys, args))
        if int(result["granted"]) == 1:
            return Lease(result["lease"], route.id, max(0, int(tokens)), float(result["expires_at"]))
        return Denied(DenyReason(result["reason"]), float(result["retry_after"]))

    async def settle(self, lease: Lease, used_tokens: int) -> None:
        await self._run("settle", [f"{PREFIX}lease:{lease.id}"], [max(0, int(used_tokens))])

    async def release(self, lease: Lease) -> None:
        await self._run("release", [f"{PREFIX}lease:{lease.id}"], [lease.id])

    async def record(
        self,
        route: Route,
        error: ErrorKind | None,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        message: str = "",
    ) -> None:
        keys, args = self._record_call(route, error, retry_after, headers, message)
        await self._run("record", keys, args)

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
        # Both scripts in one pipeline: one round trip where settle and record took two.
        keys, args = self._record_call(route, error, retry_after, headers, message)
        client = self._client()
        scripts = self._scripts_of(client)
        await run_scripts(client, [(scripts.settle, [f"{PREFIX}lease:{lease.id}"], [max(0, int(used_tokens))]),
                                   (scripts.record, keys, args)])

    def _record_call(self, route: Route, error: ErrorKind | None, retry_after: float | None,
                     headers: Mapping[str, str] | None, message: str) -> tuple[list[str], list]:
        now = self.now()
        tz = route.daily_reset_tz
        day = policy.day_id(now, tz)
        obs = observe(route, headers, message, retry_after)
        floors = obs.floors(policy.seconds_to_midnight(now, tz))
        exhausted_reason, exhausted_until = "", 0.0
        for window, seconds in obs.exhausted.items():
            until = now + policy.resolve_wait(seconds, now, tz)
            if until > exhausted_until:
                exhausted_reason, exhausted_until = window, until
        explicit_wait = obs.retry_after
        if explicit_wait is None and obs.exhausted:
            explicit_wait = exhausted_until - now
        keys = self._route_keys(route, day)
        keys = keys[:5] + [keys[7]]
        args = [
            repr(now), _OUTCOMES.get(error, _Outcome.NEUTRAL).value, policy.MINUTE_SPAN, policy.DAY_TTL, policy.LEARNED_TTL,
            *[obs.learned.get(w, "") for w in WINDOWS],
            *[floors.get(w, "") for w in WINDOWS],
            exhausted_reason, repr(exhausted_until), repr(-1.0 if explicit_wait is None else explicit_wait),
            repr(policy.seconds_to_midnight(now, tz)), repr(policy.DEFAULT_RATE_LIMIT_COOLDOWN),
            policy.FAILURE_THRESHOLD, *[repr(c) for c in policy.FAILURE_COOLDOWNS],
            _limit_arg(route.limits.rpd), _limit_arg(route.limits.tpd),
            "" if error is None else error.value, "" if error is None else message[:LAST_ERROR_CHARS],
        ]  # fmt: skip
        return keys, args

    def _inspect_call(self, route: Route, now: float) -> tuple[list[str], list]:
        keys = self._route_keys(route, policy.day_id(now, route.daily_reset_tz))
        return keys, [repr(now), policy.MINUTE_SPAN, policy.LEARNED_TTL]

    async def _inspect(self, route: Route) -> _Inspection:
        now = self.now()
        return _Inspection.from_reply(now, await self._run("inspect", *self._inspect_call(route, now)))

    async def status(self, route: Route) -> RouteStatus:
        seen = await self._inspect(route)
        exhausted = seen.exhausted_until > seen.now
        return RouteStatus(
            health=seen.health,
            cooldown_until=seen.until if seen.is_open else None,
            failures=seen.failures,
            used=seen.used,
            learned=seen.learned,
            limits=effective_limits(route.limits, seen.learned),
            key_invalid=seen.key_invalid,
            exhausted_until=seen.exhausted_until if exhausted else None,
            exhausted_reason=seen.exhausted_reason if exhausted else "",
            last_success_at=seen.last_success_at or None,
            last_error=seen.last_error,
        )

    async def headroom(self, route: Route) -> float:
        return self._headroom(route, await self._inspect(route))

    # Inspections per pipeline when many routes are read at once (a model with a thousand keys).
    _BATCH = 500

    async def headrooms(self, routes: Sequence[Route]) -> list[float]:
        client = self._client()
        inspect = self._scripts_of(client).inspect
        now = self.now()
        found: list[float] = []
        for start in range(0, len(routes), self._BATCH):
            batch = routes[start:start + self._BATCH]
            calls = [(inspect, *self._inspect_call(route, now)) for route in batch]
            replies = await run_scripts(client, calls)
            found += [self._headroom(route, _Inspection.from_reply(now, reply))
                      for route, reply in zip(batch, replies, strict=True)]
        return found

    @staticmethod
    def _headroom(route: Route, seen: _Inspection) -> float:
        if seen.key_invalid:
            return 0.0
        if (seen.is_open and seen.now < seen.until) or seen.now < seen.exhausted_until:
            return 0.0
        limits = effective_limits(route.limits, seen.learned)
        if any(limit == 0 for limit in limits.values()):
            return 0.0
        fractions = [1.0 - seen.used[w] / limit for w, limit in limits.items() if limit]
        return max(0.0, min(fractions)) if fractions else 1.0

    async def set_key_invalid(self, route: Route, invalid: bool) -> None:
        key = f"{PREFIX}k:{route.key_id}"
        client = self._client()
        if invalid:
            await client.set(key, repr(self.now()), nx=True)
        else:
            await client.delete(key)

    async def clear_cooldown(self, route: Route) -> None:
        r = f"{PREFIX}r:{route.id}"
        await self._client().delete(f"{r}:h", f"{PREFIX}k:{route.key_id}")

