"""Mirror of sticky sessions into the database for the admin, written off the hot path."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from .models import StickySession

logger = logging.getLogger(__name__)

# Strong references: the event loop only keeps weak ones, and a collected task silently never runs.
_pending: set[asyncio.Task] = set()


def session_log(
    *,
    key: str,
    source: str,
    api_key_id: int | None,
    provider: str,
    model: str,
    switches: int,
    created: float,
    last_used: float,
    switch_reason: str = "",
) -> None:
    """Record the session's current binding without waiting for the database (fire and forget)."""
    task = asyncio.get_running_loop().create_task(
        sticky_session_upsert(
            key=key,
            source=source,
            api_key_id=api_key_id,
            provider=provider,
            model=model,
            switches=switches,
            created=created,
            last_used=last_used,
            switch_reason=switch_reason,
        )
    )
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def sticky_session_upsert(
    *,
    key: str,
    source: str,
    api_key_id: int | None,
    provider: str,
    model: str,
    switches: int,
    created: float,
    last_used: float,
    switch_reason: str = "",
) -> None:
    values = {
        "source": source,
        "api_key_id": api_key_id,
        "provider": provider,
        "model": model,
        "switches": switches,
        "created": datetime.fromtimestamp(created, UTC),
        "last_used": datetime.fromtimestamp(last_used, UTC),
    }
    if switch_reason:
        values["last_switch_reason"] = switch_reason[:300]
    try:
        await StickySession.objects.aupdate_or_create(key=key, defaults=values)
    except Exception:
        # The admin mirror must never break or slow a request; the session store stays authoritative.
        logger.exception("could not record sticky session %s…", key[:12])


async def session_log_drain() -> None:
    """Wait for the pending writes of this event loop (shutdown, tests)."""
    loop = asyncio.get_running_loop()
    mine = [task for task in _pending if task.get_loop() is loop]
    if mine:
        await asyncio.gather(*mine, return_exceptions=True)
