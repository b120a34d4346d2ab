"""Request-log writes, batched in the background so the response never waits on the database, and the
pruning of old rows (a beat task, analytics/tasks.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from freellm.background import spawn

from .live import live_rows_publish, live_rows_publish_sync
from .models import RequestLog

log = logging.getLogger(__name__)

_BATCH = 200
_queue: list[RequestLog] = []
_flushing: set[asyncio.Task] = set()


def request_log_enqueue(**fields) -> None:
    """Queue one RequestLog row; a task on the running loop writes queued rows in one bulk insert."""
    _queue.append(RequestLog(created_at=datetime.now(UTC), **fields))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        request_logs_flush_sync()
        return
    # A task that has returned stays in _flushing until its done-callback runs; it drains no more rows.
    if all(task.done() for task in _flushing):
        task = spawn(request_logs_flush())
        _flushing.add(task)
        task.add_done_callback(_flushing.discard)


async def request_logs_flush() -> None:
    # Yield once so that the rows of requests finishing together go in one insert.
    await asyncio.sleep(0.05)
    while _queue:
        batch = _queue[:_BATCH]
        del _queue[:_BATCH]
        try:
            await RequestLog.objects.abulk_create(batch)
        except Exception:
            log.exception("could not write %d request log rows", len(batch))
            continue
        await live_rows_publish(batch)


def request_logs_flush_sync() -> None:
    while _queue:
        batch = _queue[:_BATCH]
        del _queue[:_BATCH]
        RequestLog.objects.bulk_create(batch)
        live_rows_publish_sync(batch)


def request_logs_idle() -> bool:
    return not _queue and not _flushing


def request_logs_prune(*, keep_days: int | None = None, now: datetime | None = None, batch: int = 5000) -> int:
    """Delete request logs older than ``keep_days`` in batches (short write locks). Returns rows deleted."""
    keep_days = settings.FREELLM_LOG_RETENTION_DAYS if keep_days is None else keep_days
    cutoff = (now or timezone.now()) - timedelta(days=keep_days)
    deleted = 0
    while True:
        ids = list(RequestLog.objects.filter(created_at__lt=cutoff).values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += RequestLog.objects.filter(id__in=ids).delete()[0]
