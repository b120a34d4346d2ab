"""The response cache (opt-in per chain): a deterministic request asked again gets the same answer without an
upstream call and without spending quota.

    cached      plain chat and embeddings addressed to a chain with ``cache_ttl`` > 0; chat only when it is
                deterministic (``temperature`` 0 or a ``seed``): a sampled answer is not the answer
    key         the normalised request: the chain it resolved to (so ``auto`` and ``auto:fast`` share), every
                parameter, the messages and the tools, as sorted-key JSON, hashed (SHA-256), with the user
                it belongs to: never shared across users unless the chain says ``cache_shared``
    store       Redis when REDIS_URL is set (shared by every gateway process; an outage is a miss, through a
                RedisBreaker), else an in-process LRU of FREELLM_CACHE_MAX_ENTRIES whose entries expire each
                after its chain's TTL (cachetools' TLRUCache)
    headers     the request's ``X-FreeLLM-Cache: no-store`` skips the cache (no read, no write); a stream is
                served from the cache only with ``X-FreeLLM-Cache: replay`` (the cached plain answer, replayed
                through the dialect's stream encoder). Responses say ``X-FreeLLM-Cache: hit`` or ``miss``.

The exchange (routing/api/exchange.py) is the only caller, so every dialect gets the same cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import TLRUCache
from django.conf import settings

from routing.config import ChainInfo

log = logging.getLogger(__name__)

HEADER = "X-FreeLLM-Cache"
NO_STORE = "no-store"
REPLAY = "replay"
PREFIX = "freellm:c:"
# Not part of what was asked: how the answer is delivered (a replayed stream shares the plain answer).
_DELIVERY = frozenset({"model", "stream", "stream_options"})


def directives(headers: Mapping[str, str]) -> frozenset[str]:
    """The request's X-FreeLLM-Cache values (comma-separated, any case)."""
    raw = headers.get(HEADER) or ""
    return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())


def deterministic(body: Mapping[str, Any]) -> bool:
    """Whether asking again should give the same answer: temperature 0 or a seed."""
    temperature = body.get("temperature")
    return body.get("seed") is not None or (
        isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0)


def cache_key(*, kind: str, chain: str, body: Mapping[str, Any], scope: str) -> str:
    normalised = {k: v for k, v in body.items() if k not in _DELIVERY}
    text = json.dumps({"kind": kind, "chain": chain, "scope": scope, "request": normalised},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return PREFIX + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def user_scope(*, user_id: int | None, api_key_id: int | None) -> str:
    """Whose answers these are: the user (all their keys), else the key."""
    if user_id is not None:
        return f"u{user_id}"
    return f"k{api_key_id}" if api_key_id is not None else "anonymous"


@dataclass
class CacheSlot:
    """Where this request's answer is (or will be) cached."""

    key: str
    ttl: int
    entry: dict | None = None  # a hit: {"answer": ..., "served": "provider/model"}

    async def store(self, answer: dict, served: str) -> None:
        await get_response_cache().set(self.key, {"answer": answer, "served": served}, self.ttl)


async def cache_slot(*, chain: ChainInfo | None, kind: str, body: Mapping[str, Any], headers: Mapping[str, str],
                     stream: bool, user_id: int | None, api_key_id: int | None) -> CacheSlot | None:
    """The request's cache slot with what it holds, or None when this request is not cached at all."""
    if chain is None or chain.cache_ttl <= 0:
        return None
    asked = directives(headers)
    if NO_STORE in asked or (stream and REPLAY not in asked):
        return None
    if kind == "chat" and not deterministic(body):
        return None
    scope = "shared" if chain.cache_shared else user_scope(user_id=user_id, api_key_id=api_key_id)
    slot = CacheSlot(cache_key(kind=kind, chain=chain.name, body=body, scope=scope), chain.cache_ttl)
    slot.entry = await get_response_cache().get(slot.key)
    return slot


def completion_chunks(completion: dict) -> list[dict]:
    """A plain chat.completion as the chunks a stream of it would have had (a cached answer replayed):
    the message, the finish reason, then usage alone, as OpenAI sends it."""
    base = {"id": completion.get("id", ""), "object": "chat.completion.chunk",
            "created": completion.get("created", int(time.time())), "model": completion.get("model", "")}
    chunks = []
    finishes = []
    for choice in completion.get("choices") or ():
        message = dict(choice.get("message") or {})
        delta = {"role": message.pop("role", "assistant"), **{k: v for k, v in message.items() if v is not None}}
        if delta.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(delta["tool_calls"])]
        index = choice.get("index", 0)
        chunks.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        finishes.append({"index": index, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"})
    chunks.append({**base, "choices": finishes})
    if usage := completion.get("usage"):
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


class ReplayStream:
    """A cached answer in the shape of an upstream stream (what the exchange's relay reads)."""

    headers: dict[str, str] = {}

    def __init__(self, chunks: list[dict]) -> None:
        self._chunks = chunks

    async def chunks(self):
        for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        return None


# --- stores --------------------------------------------------------------------------------------------


class LocalResponseCache:
    """This process's cache: least recently used entries go first, each expires after its own TTL."""

    def __init__(self, max_entries: int) -> None:
        self._entries: TLRUCache = TLRUCache(max_entries, ttu=lambda _key, value, now: now + value[0],
                                             timer=time.monotonic)

    async def get(self, key: str) -> dict | None:
        found = self._entries.get(key)
        return None if found is None else json.loads(found[1])

    async def set(self, key: str, entry: dict, ttl: int) -> None:
        # Stored as JSON text: a hit hands out a fresh copy that no caller can change under the cache.
        self._entries[key] = (ttl, json.dumps(entry))


class RedisResponseCache:
    """Shared by every gateway process. While Redis is unreachable every lookup is a miss and nothing is
    stored: the cache only ever saves calls, it never fails a request."""

    def __init__(self, url: str) -> None:
        from routing.redis import RedisBreaker

        self.url = url
        self.breaker = RedisBreaker(log=log, down="response cache off while Redis is unreachable (%(error)s)",
                                    back="response cache back on")

    def _client(self):
        from routing.redis import redis_client

        return redis_client(self.url)

    async def get(self, key: str) -> dict | None:
        async def miss() -> None:
            return None

        raw = await self.breaker.call(lambda: self._client().get(key), miss)
        return None if raw is None else json.loads(raw)

    async def set(self, key: str, entry: dict, ttl: int) -> None:
        async def dropped() -> None:
            return None

        text = json.dumps(entry)
        await self.breaker.call(lambda: self._client().set(key, text, ex=ttl), dropped)


_cache: LocalResponseCache | RedisResponseCache | None = None


def get_response_cache() -> LocalResponseCache | RedisResponseCache:
    global _cache
    if _cache is None:
        url = settings.REDIS_URL
        _cache = RedisResponseCache(url) if url else LocalResponseCache(settings.FREELLM_CACHE_MAX_ENTRIES)
    return _cache


def reset_response_cache() -> None:
    """Forget this process's cache (tests; entries in Redis are keyed under freellm:)."""
    global _cache
    _cache = None
