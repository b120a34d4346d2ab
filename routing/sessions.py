"""Sticky sessions: a conversation stays on the (provider, model) that first served it.

A session is identified by ``session_key`` and remembered for ``FREELLM_STICKY_TTL`` seconds after its last
use (sliding). The store lives where the quota store lives: Redis when ``REDIS_URL`` is set (shared by every
gateway process, survives a restart), else in-process. A Redis failure degrades to the in-process store for
that call instead of failing the request: stickiness is a preference, never a reason for a 500.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings

from .redis import RedisBreaker, redis_client

logger = logging.getLogger(__name__)

SESSION_HEADER = "x-session-id"
REDIS_KEY_PREFIX = "freellm:sess:"
# Enough bits that two conversations never collide, short enough for log columns and Redis keys.
SESSION_KEY_HEX_LEN = 32


class SessionSource(StrEnum):
    HEADER = "header"
    USER = "user"
    CONVERSATION = "conversation"


def session_key(
    *, headers: Mapping[str, str], body: Mapping[str, Any], api_key_id: int | str | None
) -> tuple[str, str]:
    """(key, source) for a chat request.

    The key is always a hash namespaced by the unified key, so one client cannot land on another client's
    session by sending the same X-Session-Id, and no raw user text ends up in Redis or the admin.
    """
    header_value = _header(headers, SESSION_HEADER)
    if header_value:
        return _hash(api_key_id, SessionSource.HEADER, header_value), SessionSource.HEADER
    user = body.get("user")
    if isinstance(user, str) and user.strip():
        return _hash(api_key_id, SessionSource.USER, user.strip()), SessionSource.USER
    opening = _conversation_opening(body.get("messages") or [])
    return _hash(api_key_id, SessionSource.CONVERSATION, opening), SessionSource.CONVERSATION


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        # Plain dicts are case-sensitive; Django's request.headers is not.
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return (value or "").strip()


def _conversation_opening(messages: list) -> str:
    """The first system and the first user message, canonically serialised (content may be parts)."""
    first: dict[str, Any] = {}
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            role = "system"
        if role in ("system", "user") and role not in first:
            first[role] = message.get("content")
        if len(first) == 2:
            break
    return json.dumps(first, sort_keys=True, ensure_ascii=False, default=str)


def _hash(api_key_id: int | str | None, source: str, value: str) -> str:
    material = "\x1f".join((str(api_key_id or ""), source, value))
    return hashlib.sha256(material.encode()).hexdigest()[:SESSION_KEY_HEX_LEN]


@dataclass
class StickySession:
    provider: str
    model: str
    switches: int
    created: float
    last_used: float

    @property
    def route_name(self) -> str:
        return f"{self.provider}/{self.model}"


class StickySessionStore(ABC):
    """Sliding-TTL map session key → StickySession. Every write slides the TTL."""

    @abstractmethod
    async def get(self, key: str) -> StickySession | None: ...

    @abstractmethod
    async def set(self, key: str, *, provider: str, model: str) -> StickySession:
        """Bind the session to a model (first answer). Keeps created/switches of an existing session."""

    @abstractmethod
    async def touch(self, key: str) -> StickySession | None:
        """The session was used again: slide its TTL. Returns it as it is now (None: it had expired)."""

    @abstractmethod
    async def record_switch(self, key: str, *, provider: str, model: str) -> StickySession:
        """Another model took the conversation over: rebind and count the switch."""

    @abstractmethod
    async def drop(self, key: str) -> None:
        """Forget the session (its model left the chain)."""


def _ttl() -> int:
    return int(settings.FREELLM_STICKY_TTL)


class LocalSessionStore(StickySessionStore):
    """In-process store for the embedded single-process setup."""

    # Expired entries are swept on writes once the map is this large, so memory stays bounded by traffic.
    SWEEP_THRESHOLD = 10_000

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, StickySession]] = {}

    def _live(self, key: str, now: float) -> StickySession | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires_at, session = item
        if expires_at <= now:
            del self._items[key]
            return None
        return session

    def _put(self, key: str, session: StickySession, now: float) -> None:
        if len(self._items) >= self.SWEEP_THRESHOLD:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
        self._items[key] = (now + _ttl(), session)

    async def get(self, key: str) -> StickySession | None:
        session = self._live(key, time.time())
        return StickySession(**asdict(session)) if session else None

    async def set(self, key: str, *, provider: str, model: str) -> StickySession:
        now = time.time()
        old = self._live(key, now)
        session = StickySession(provider, model, old.switches if old else 0, old.created if old else now, now)
        self._put(key, session, now)
        return StickySession(**asdict(session))

    async def touch(self, key: str) -> StickySession | None:
        now = time.time()
        session = self._live(key, now)
        if session is None:
            return None
        session.last_used = now
        self._put(key, session, now)
        return StickySession(**asdict(session))

    async def record_switch(self, key: str, *, provider: str, model: str) -> StickySession:
        now = time.time()
        old = self._live(key, now)
        session = StickySession(
            provider, model, (old.switches if old else 0) + 1, old.created if old else now, now
        )
        self._put(key, session, now)
        return StickySession(**asdict(session))

    async def drop(self, key: str) -> None:
        self._items.pop(key, None)


# Slide a session's TTL and read it back, in one round trip; nothing for a session that has expired.
_TOUCH = """
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last_used', ARGV[2])
  return redis.call('HGETALL', KEYS[1])
end
return {}
"""


class RedisSessionStore(StickySessionStore):
    """One Redis hash per session at ``freellm:sess:<key>``; the key's own TTL does the expiry."""

    def __init__(self, client) -> None:
        # A client with decode_responses (routing.redis.redis_client): answers are str.
        self._client = client
        self._touch = client.register_script(_TOUCH)

    @staticmethod
    def _key(key: str) -> str:
        return REDIS_KEY_PREFIX + key

    async def get(self, key: str) -> StickySession | None:
        return self._session(await self._client.hgetall(self._key(key)))

    @staticmethod
    def _session(raw: dict[str, str]) -> StickySession | None:
        if not raw or "provider" not in raw:
            return None
        return StickySession(
            provider=raw["provider"],
            model=raw["model"],
            switches=int(raw.get("switches", 0)),
            created=float(raw.get("created", 0)),
            last_used=float(raw.get("last_used", 0)),
        )

    async def set(self, key: str, *, provider: str, model: str) -> StickySession:
        return await self._write(key, provider=provider, model=model, switch=False)

    async def record_switch(self, key: str, *, provider: str, model: str) -> StickySession:
        return await self._write(key, provider=provider, model=model, switch=True)

    async def _write(self, key: str, *, provider: str, model: str, switch: bool) -> StickySession:
        name, now = self._key(key), time.time()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping={"provider": provider, "model": model, "last_used": now})
            pipe.hsetnx(name, "created", now)
            pipe.hincrby(name, "switches", 1 if switch else 0)
            pipe.expire(name, _ttl())
            pipe.hget(name, "created")
            _, _, switches, _, created = await pipe.execute()
        return StickySession(provider, model, int(switches), float(created), now)

    async def touch(self, key: str) -> StickySession | None:
        # One round trip. EXPIRE answers whether the key exists, so an expired session is not resurrected
        # as a bare hash.
        raw = await self._touch(keys=[self._key(key)], args=[_ttl(), time.time()])
        return self._session(dict(zip(raw[::2], raw[1::2], strict=True)))

    async def drop(self, key: str) -> None:
        await self._client.delete(self._key(key))


class DegradingSessionStore(StickySessionStore):
    """Redis first; on a Redis error the in-process store answers so the request still goes through.

    ``breaker`` (one per Redis URL, shared by every instance) leaves Redis alone for a few seconds after a
    failure and says once that sessions went in-process, and once that they are back.
    """

    def __init__(self, primary: StickySessionStore, fallback: StickySessionStore, *, breaker: RedisBreaker) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker

    async def _call(self, method: str, *args, **kwargs):
        return await self.breaker.call(
            lambda: getattr(self.primary, method)(*args, **kwargs),
            lambda: getattr(self.fallback, method)(*args, **kwargs),
        )

    async def get(self, key: str) -> StickySession | None:
        return await self._call("get", key)

    async def set(self, key: str, *, provider: str, model: str) -> StickySession:
        return await self._call("set", key, provider=provider, model=model)

    async def touch(self, key: str) -> StickySession | None:
        return await self._call("touch", key)

    async def record_switch(self, key: str, *, provider: str, model: str) -> StickySession:
        return await self._call("record_switch", key, provider=provider, model=model)

    async def drop(self, key: str) -> None:
        await self._call("drop", key)


_local_store = LocalSessionStore()
_breakers: dict[str, RedisBreaker] = {}


def _breaker(url: str) -> RedisBreaker:
    breaker = _breakers.get(url)
    if breaker is None:
        breaker = _breakers[url] = RedisBreaker(
            log=logger,
            down="sticky session store degraded to in-process (%(error)s) until Redis answers again",
            back="sticky session store: Redis is back; sessions are shared again",
        )
    return breaker


def get_session_store() -> StickySessionStore:
    """The store for the current settings: Redis (degrading to local) when REDIS_URL is set, else local."""
    if not settings.REDIS_URL:
        return _local_store
    url = settings.REDIS_URL
    return DegradingSessionStore(RedisSessionStore(redis_client(url)), _local_store, breaker=_breaker(url))


def reset_session_store() -> None:
    """Forget every in-process session (tests; the Redis keys are the test's own database)."""
    _local_store._items.clear()
    _breakers.clear()
