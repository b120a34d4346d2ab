"""Mirror of sticky sessions into the database for the admin, written off the hot path.

Routing announces each turn (``routing.signals.session_served``, connected in ``AnalyticsConfig.ready``).

``session_log`` only remembers the session's latest state; a task on the running loop writes what has
gathered in one upsert per batch, so a burst of turns costs a couple of statements, not one per request.
The session store (routing.sessions) stays authoritative: a lost mirror write only makes the admin late.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from freellm.background import spawn

from .models import StickySession

logger = logging.getLogger(__name__)

_UPDATED = ["source", "api_key", "provider", "model", "switches", "created", "last_used"]
# Latest state per session key, waiting for the writer.
_pending: dict[str, StickySession] = {}
_writers: set[asyncio.Task] = set()


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
    previous = _pending.get(key)
    _pending[key] = StickySession(
        key=key,
        source=source,
        api_key_id=api_key_id,
        provider=provider,
        model=model,
        switches=switches,
        # A switch reason waiting to be written survives later turns of the same batch.
        last_switch_reason=switch_reason[:300] or (previous.last_switch_reason if previous else ""),
        created=datetime.fromtimestamp(created, UTC),
        last_used=datetime.fromtimestamp(last_used, UTC),
    )
    loop = asyncio.get_running_loop()
    # One writer per event loop: a writer left on a loop that has stopped must not hold the others up.
    if not any(task.get_loop() is loop for task in _writers):
        task = spawn(_write_pending())
        _writers.add(task)
        task.add_done_callback(_writers.discard)


def mirror_session(sender, **fields) -> None:
    """Receiver of ``routing.signals.session_served``: mirror the turn's binding (see ``session_log``)."""
    fields.pop("signal", None)
    session_log(**fields)


async def _write_pending() -> None:
    # The mirror is for people: a write every quarter second at most lets busy sessions share a batch.
    while True:
        await asyncio.sleep(0.25)
        if not _pending:
            break
        rows = list(_pending.values())
        _pending.clear()
        # Only a switch changes the reason; ordinary turns must not blank the last one.
        switched = [row for row in rows if row.last_switch_reason]
        plain = [row for row in rows if not row.last_switch_reason]
        try:
            for batch, fields in ((switched, [*_UPDATED, "last_switch_reason"]), (plain, _UPDATED)):
                if batch:
                    await StickySession.objects.abulk_create(
                        batch, update_conflicts=True, unique_fields=["key"], update_fields=fields
                    )
        except Exception:
            logger.exception("could not record %d sticky sessions", len(rows))


async def session_log_drain() -> None:
    """Wait until this event loop's pending mirror writes are done (shutdown, tests)."""
    loop = asyncio.get_running_loop()
    while mine := [task for task in _writers if task.get_loop() is loop]:
        await asyncio.gather(*mine, return_exceptions=True)


def session_log_idle() -> bool:
    return not _pending and not _writers


def sticky_sessions_prune(*, keep_days: int | None = None) -> int:
    """Delete mirror rows of sessions unused for ``keep_days`` (the request-log retention by default)."""
    keep_days = settings.FREELLM_LOG_RETENTION_DAYS if keep_days is None else keep_days
    cutoff = timezone.now() - timedelta(days=keep_days)
    return StickySession.objects.filter(last_used__lt=cutoff).delete()[0]
