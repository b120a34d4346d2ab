"""Stored Responses API answers (``store: true``): read back by GET /v1/responses/{id}, removed by DELETE,
and continued by a later request's ``previous_response_id``.

Where: Redis under a TTL (FREELLM_RESPONSES_TTL) when REDIS_URL is set, else the database
(``StoredResponse`` rows, pruned by the beat job). A Redis that fails sends reads and writes to the
database (routing.redis.RedisBreaker), so a stored answer is never lost to an outage; reads that miss in
Redis look there too.

Each record keeps its own request's input items and the ids of the earlier responses of its conversation
(``ancestry``), so a continuation reads its whole history with one multi-get instead of walking the chain,
and no record repeats the history before it. Every record is scoped to the user whose API key created it:
another user's id reads as unknown.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from routing.errors import GatewayError
from routing.redis import RedisBreaker, redis_client

log = logging.getLogger(__name__)

REDIS_KEY_PREFIX = "freellm:resp:"


@dataclass
class ResponseRecord:
    id: str
    user_id: int | None
    response: dict[str, Any]  # the Response object as the client received it
    input_items: list[dict[str, Any]] = field(default_factory=list)
    ancestry: list[str] = field(default_factory=list)  # earlier responses of the conversation, oldest first

    @property
    def conversation_ids(self) -> list[str]:
        """This response's conversation up to and including itself, oldest first."""
        return [*self.ancestry, self.id]


class ResponseStore(ABC):
    @abstractmethod
    async def get_many(self, ids: list[str]) -> dict[str, ResponseRecord]:
        """The records among ``ids`` that exist (unexpired), by id."""

    @abstractmethod
    async def put(self, record: ResponseRecord) -> None: ...

    @abstractmethod
    async def delete(self, response_id: str) -> bool:
        """Remove it; whether it was there."""

    async def get(self, response_id: str) -> ResponseRecord | None:
        return (await self.get_many([response_id])).get(response_id)


def _ttl() -> int:
    return int(settings.FREELLM_RESPONSES_TTL)


class DatabaseResponseStore(ResponseStore):
    async def get_many(self, ids: list[str]) -> dict[str, ResponseRecord]:
        from routing.models import StoredResponse

        rows = StoredResponse.objects.filter(id__in=ids, expires_at__gt=timezone.now())
        return {row.id: ResponseRecord(row.id, row.user_id, row.response, row.input_items, row.ancestry)
                async for row in rows}

    async def put(self, record: ResponseRecord) -> None:
        from routing.models import StoredResponse

        await StoredResponse.objects.acreate(
            id=record.id, user_id=record.user_id, response=record.response, input_items=record.input_items,
            ancestry=record.ancestry, expires_at=timezone.now() + timedelta(seconds=_ttl()),
        )

    async def delete(self, response_id: str) -> bool:
        from routing.models import StoredResponse

        deleted, _ = await StoredResponse.objects.filter(id=response_id).adelete()
        return bool(deleted)


class RedisResponseStore(ResponseStore):
    def __init__(self, client) -> None:
        self.client = client

    async def get_many(self, ids: list[str]) -> dict[str, ResponseRecord]:
        if not ids:
            return {}
        values = await self.client.mget([REDIS_KEY_PREFIX + i for i in ids])
        return {i: ResponseRecord(**json.loads(v)) for i, v in zip(ids, values, strict=True) if v is not None}

    async def put(self, record: ResponseRecord) -> None:
        await self.client.set(REDIS_KEY_PREFIX + record.id, json.dumps(asdict(record), separators=(",", ":")),
                              ex=_ttl())

    async def delete(self, response_id: str) -> bool:
        return bool(await self.client.delete(REDIS_KEY_PREFIX + response_id))


class DegradingResponseStore(ResponseStore):
    """Redis first; the database when Redis fails (``breaker``: one per Redis URL, which skips Redis for a
    few seconds after a failure and tells the operator once), and for what Redis lacks because it was
    written during an outage."""

    def __init__(self, primary: ResponseStore, fallback: ResponseStore, *, breaker: RedisBreaker) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker

    async def get_many(self, ids: list[str]) -> dict[str, ResponseRecord]:
        from_fallback = False

        async def fallback() -> dict[str, ResponseRecord]:
            nonlocal from_fallback
            from_fallback = True
            return await self.fallback.get_many(ids)

        found = await self.breaker.call(lambda: self.primary.get_many(ids), fallback)
        missing = [] if from_fallback else [i for i in ids if i not in found]
        if missing:
            found.update(await self.fallback.get_many(missing))
        return found

    async def put(self, record: ResponseRecord) -> None:
        await self.breaker.call(lambda: self.primary.put(record), lambda: self.fallback.put(record))

    async def delete(self, response_id: str) -> bool:
        async def not_there() -> bool:
            return False

        deleted = await self.breaker.call(lambda: self.primary.delete(response_id), not_there)
        # Also where an outage may have put it.
        return await self.fallback.delete(response_id) or deleted


_breakers: dict[str, RedisBreaker] = {}


def _breaker(url: str) -> RedisBreaker:
    breaker = _breakers.get(url)
    if breaker is None:
        breaker = _breakers[url] = RedisBreaker(
            log=log,
            down="stored responses go to the database (%(error)s) until Redis answers again",
            back="stored responses: Redis is back",
        )
    return breaker


def get_response_store() -> ResponseStore:
    if not settings.REDIS_URL:
        return DatabaseResponseStore()
    url = settings.REDIS_URL
    return DegradingResponseStore(RedisResponseStore(redis_client(url)), DatabaseResponseStore(),
                                  breaker=_breaker(url))


# --- selectors and services ---------------------------------------------------------------------------


def not_found(response_id: str, param: str | None = None) -> GatewayError:
    # Word for word OpenAI's answer, type included (theirs is invalid_request_error, not not_found_error).
    return GatewayError(404, f"Response with id '{response_id}' not found.", param=param,
                        type="invalid_request_error")


def _could_be_stored(response_id: str) -> bool:
    """Whether ``response_id`` could name a stored response: anything else (a NUL, a control character, an
    id longer than ours) is simply not found, never a query PostgreSQL refuses with a 500."""
    return 0 < len(response_id) <= 64 and response_id.isprintable()


async def stored_response_get(*, response_id: str, user_id: int | None) -> ResponseRecord:
    """The user's stored response, or a 404 (also for another user's: its existence is not revealed)."""
    record = await get_response_store().get(response_id) if _could_be_stored(response_id) else None
    if record is None or record.user_id != user_id:
        raise not_found(response_id)
    return record


async def conversation_history(*, previous_response_id: str, user_id: int | None) -> tuple[list[dict], list[str]]:
    """(items, conversation ids) of the conversation that ends with ``previous_response_id``: every earlier
    request's input and answer's output, oldest first. 404 when it, or a response it continues, is gone."""
    store = get_response_store()
    previous = await store.get(previous_response_id) if _could_be_stored(previous_response_id) else None
    if previous is None or previous.user_id != user_id:
        raise not_found(previous_response_id, "previous_response_id")
    records = await store.get_many(previous.ancestry) if previous.ancestry else {}
    records[previous.id] = previous
    items: list[dict] = []
    for response_id in previous.conversation_ids:
        record = records.get(response_id)
        if record is None or record.user_id != user_id:
            raise GatewayError(404, f"Response with id '{previous_response_id}' continues response '{response_id}', "
                                    "which is no longer stored (deleted or expired).",
                               param="previous_response_id", type="invalid_request_error")
        items.extend(record.input_items)
        items.extend(record.response.get("output") or ())
    return items, previous.conversation_ids


async def stored_response_save(*, response: dict[str, Any], user_id: int | None, input_items: list[dict],
                               ancestry: list[str]) -> None:
    await get_response_store().put(ResponseRecord(response["id"], user_id, response, input_items, ancestry))


async def stored_response_delete(*, response_id: str, user_id: int | None) -> None:
    await stored_response_get(response_id=response_id, user_id=user_id)
    await get_response_store().delete(response_id)


def stored_responses_prune(*, now=None, batch: int = 5000) -> int:
    """Delete expired database rows in batches (sync, for the beat job; Redis expires its own)."""
    from routing.models import StoredResponse

    cutoff = now or timezone.now()
    deleted = 0
    while True:
        ids = list(StoredResponse.objects.filter(expires_at__lte=cutoff).values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += StoredResponse.objects.filter(id__in=ids).delete()[0]
