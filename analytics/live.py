"""The live feed's wire: each written request log row goes to the "live" group of the channel layer.

Publishing is best effort: a missing, slow or failing channel layer is logged and never reaches the
request path (rows are published by the background flush, after they are in the database).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from asgiref.sync import async_to_sync
from cachetools import TTLCache
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model

from routing.redis import RedisBreaker

from .models import RequestLog

log = logging.getLogger(__name__)

LIVE_GROUP = "live"
# Consumer method live_rows handles it (channels maps "live.rows" → live_rows).
LIVE_EVENT = "live.rows"
PUBLISH_TIMEOUT = 2.0

# What the feed shows of a row: no API key, no trail, no error text (the detail page has those).
LIVE_FIELDS = (
    "id",
    "endpoint",
    "requested_model",
    "provider",
    "model",
    "key_label",
    "stream",
    "status_code",
    "outcome",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "first_token_ms",
)


# Names of the users whose rows were published lately: a busy feed asks the database once a minute per user,
# not once per flush (a renamed user shows under the old name for up to that long).
_usernames: TTLCache[int, str] = TTLCache(maxsize=4096, ttl=60.0)


async def _names_of(user_ids: set[int]) -> dict[int, str]:
    missing = [uid for uid in user_ids if uid not in _usernames]
    if missing:
        users = get_user_model().objects.filter(id__in=missing).values_list("id", "username")
        async for uid, name in users:
            _usernames[uid] = name
    return {uid: _usernames[uid] for uid in user_ids if uid in _usernames}


def request_log_payload(row: RequestLog, usernames: dict[int, str]) -> dict:
    payload = {name: getattr(row, name) for name in LIVE_FIELDS}
    payload["created_at"] = row.created_at.isoformat()
    payload["user"] = usernames.get(row.user_id, "") if row.user_id else ""
    return payload


async def live_rows_publish(rows: Sequence[RequestLog]) -> None:
    """Send the rows to the live group; never raises."""
    try:
        layer = get_channel_layer()
        if layer is None or not rows:
            return
        usernames = await _names_of({row.user_id for row in rows if row.user_id})
        message = {"type": LIVE_EVENT, "rows": [request_log_payload(row, usernames) for row in rows]}
        await asyncio.wait_for(layer.group_send(LIVE_GROUP, message), PUBLISH_TIMEOUT)
    except Exception as exc:
        _breaker.failed(exc, count=len(rows))
    else:
        _breaker.worked()


# The channel layer lives in Redis: while Redis is down every flush would fail. Say so once per outage.
# Every flush tries again (retry_interval 0): the flush runs in the background, never on a request.
_breaker = RedisBreaker(
    log=log,
    down="live feed: could not publish %(count)d request log rows (quiet until it works again)",
    back="live feed: publishing again",
    retry_interval=0.0,
    back_level=logging.INFO,
    traceback=True,
)


def live_rows_publish_sync(rows: Sequence[RequestLog]) -> None:
    try:
        async_to_sync(live_rows_publish)(rows)
    except Exception:
        log.warning("live feed: could not publish %d request log rows", len(rows), exc_info=True)
