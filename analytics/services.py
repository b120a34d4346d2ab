"""Request-log writes, batched in the background so the response never waits on the database.

Durable within bounds: text is made safe for any database before it is queued (NUL and other control
characters, lone surrogates, column lengths), a batch the database refuses is retried row by row so that
one bad row loses only itself, and rows the database cannot take (it is down) wait in a spool (memory,
then a file under var/) and are written when it answers again. What is lost anyway is counted
(``request_log_stats``; the admin shows it and the metrics export it). Also the pruning of old rows (a
beat task, analytics/tasks.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, connection, models
from django.utils import timezone

from freellm.background import spawn
from routing import metrics

from .live import live_rows_publish, live_rows_publish_sync
from .models import RequestLog

log = logging.getLogger(__name__)

_BATCH = 200
_queue: list[RequestLog] = []
_flushing: set[asyncio.Task] = set()
# C0 controls but tab and newline, DEL and C1 controls: PostgreSQL refuses NUL, the rest garbles the admin.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Errors that say the row is wrong (it would fail again); any other DatabaseError is taken for an outage.
_BAD_ROW_ERRORS = (DataError, IntegrityError)
_TEXT_FIELDS = {f.attname: f.max_length for f in RequestLog._meta.concrete_fields
                if isinstance(f, models.CharField | models.TextField)}
_DATETIME_FIELDS = {f.attname for f in RequestLog._meta.concrete_fields if isinstance(f, models.DateTimeField)}


def clean_text(value: str, max_length: int | None = None) -> str:
    """``value`` as any database stores it: control characters and lone surrogates replaced, cut to length."""
    # Printable ASCII (most values: model names, ids, labels) has nothing to replace; two string scans in C
    # cost less than the two regex substitutions.
    if not (value.isascii() and value.isprintable()):
        value = _SURROGATE.sub("\ufffd", _CONTROL.sub("\ufffd", value))
    return value[:max_length] if max_length else value


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple):
        return [_clean_json(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(str(key)): _clean_json(item) for key, item in value.items()}
    return value


def _clean_fields(fields: dict[str, Any]) -> dict[str, Any]:
    for name, value in fields.items():
        if isinstance(value, str) and name in _TEXT_FIELDS:
            fields[name] = clean_text(value, _TEXT_FIELDS[name])
        elif name == "trail":
            fields[name] = _clean_json(value)
    return fields


@dataclass
class RequestLogStats:
    dropped: int = 0  # rows lost: refused by the database, or beyond the spool's bounds
    spooled: int = 0  # rows waiting for the database (memory and file)
    last_drop_at: float | None = None  # wall clock
    outage_since: float | None = None  # wall clock, while the database is unreachable


class _Spool:
    """Rows waiting for the database: up to FREELLM_LOG_SPOOL_ROWS in memory, then up to
    FREELLM_LOG_SPOOL_BYTES in a JSON-lines file of this process under var/spool/; beyond that dropped."""

    def __init__(self) -> None:
        self.memory: deque[RequestLog] = deque()
        self.file_rows = 0

    @property
    def path(self) -> Path:
        return settings.VAR_DIR / "spool" / f"request-log-{os.getpid()}.jsonl"

    def __len__(self) -> int:
        return len(self.memory) + self.file_rows

    def add(self, rows: list[RequestLog]) -> None:
        for row in rows:
            if len(self.memory) < settings.FREELLM_LOG_SPOOL_ROWS and not self.file_rows:
                self.memory.append(row)
            elif not self._to_file(row):
                _drop(1, "the request-log spool is full")

    def _to_file(self, row: RequestLog) -> bool:
        line = json.dumps(_row_fields(row), default=str) + "\n"
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            size = path.stat().st_size if path.exists() else 0
            if size + len(line) > settings.FREELLM_LOG_SPOOL_BYTES:
                return False
            with path.open("a", encoding="utf-8") as spool_file:
                spool_file.write(line)
        except OSError:
            log.exception("could not spool a request-log row to %s", path)
            return False
        self.file_rows += 1
        return True

    def take(self) -> list[RequestLog]:
        """Every spooled row, oldest first (the file's rows come after the memory's)."""
        rows = list(self.memory)
        self.memory.clear()
        if self.file_rows:
            path = self.path
            try:
                with path.open(encoding="utf-8") as spool_file:
                    rows += [_row_from(json.loads(line)) for line in spool_file if line.strip()]
                path.unlink()
            except (OSError, ValueError):
                log.exception("could not read the request-log spool %s", path)
            self.file_rows = 0
        return rows


_spool = _Spool()
_stats = RequestLogStats()
_retry_at = 0.0


def _row_fields(row: RequestLog) -> dict[str, Any]:
    return {f.attname: getattr(row, f.attname) for f in RequestLog._meta.concrete_fields if f.attname != "id"}


def _row_from(fields: dict[str, Any]) -> RequestLog:
    for name in _DATETIME_FIELDS:
        if isinstance(fields.get(name), str):
            fields[name] = datetime.fromisoformat(fields[name])
    return RequestLog(**fields)


def _drop(count: int, why: str) -> None:
    metrics.request_log_dropped_total.inc(count)
    _stats.dropped += count
    _stats.last_drop_at = time.time()
    log.error("%d request-log row(s) lost: %s (%d lost so far in this process)", count, why, _stats.dropped)


def request_log_stats() -> RequestLogStats:
    """This process's request-log losses and backlog (for the admin banner and the metrics)."""
    _stats.spooled = len(_spool)
    return RequestLogStats(**vars(_stats))


def request_log_state_reset() -> None:
    """Forget the counts, the spool and any outage (tests)."""
    global _stats, _retry_at
    _spool.take()
    _stats = RequestLogStats()
    _retry_at = 0.0


def request_log_enqueue(**fields) -> None:
    """Queue one RequestLog row; a task on the running loop writes queued rows in one bulk insert."""
    _queue.append(RequestLog(created_at=datetime.now(UTC), **_clean_fields(fields)))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        request_logs_flush_sync()
        return
    _start_flush()


def _start_flush() -> None:
    # A task that has returned stays in _flushing until its done-callback runs; it drains no more rows.
    if all(task.done() for task in _flushing):
        task = spawn(request_logs_flush())
        _flushing.add(task)
        task.add_done_callback(_flushing.discard)


def _write(rows: list[RequestLog]) -> tuple[list[RequestLog], list[RequestLog]]:
    """Insert ``rows`` (sync, in the ORM's thread): the batch at once, else row by row. Returns (written,
    not written for an outage: to spool). Rows the database refuses as wrong are dropped and counted."""
    try:
        _insert(rows)
        return rows, []
    except Exception as exc:  # noqa: BLE001  (a driver may refuse a value with a ValueError of its own)
        if _is_outage(exc):
            return [], _outage(rows, exc)
    written = []
    for i, row in enumerate(rows):
        try:
            row.save(force_insert=True)
            written.append(row)
        except Exception as exc:  # noqa: BLE001
            if _is_outage(exc):
                return written, _outage(rows[i:], exc)
            _drop(1, f"the database refused it ({type(exc).__name__}: {str(exc)[:200]})")
    return written, []


_COLUMNS = [f for f in RequestLog._meta.concrete_fields if not f.primary_key]


def _insert(rows: list[RequestLog]) -> None:
    """The batch in one statement. On PostgreSQL the rows travel as one JSON document that the server unpacks
    (jsonb_to_recordset): bulk_create prepared each field of each row in Python and sent every column as an
    array, about 100 µs of the gateway's CPU a row at a batch of 200 (the benchmark logs a row per request)."""
    if connection.vendor != "postgresql":
        RequestLog.objects.bulk_create(rows)
        return
    payload = orjson.dumps([{f.attname: getattr(row, f.attname) for f in _COLUMNS} for row in rows]).decode()
    with connection.cursor() as cursor:
        cursor.execute(_postgresql_insert(), [payload])
        # The rows are inserted in the document's order (ORDER BY ordinality), each taking the next id.
        ids = sorted(id_ for (id_,) in cursor.fetchall())
    for row, id_ in zip(rows, ids, strict=True):
        row.id = id_
        row._state.adding = False
        row._state.db = connection.alias


@functools.cache
def _postgresql_insert() -> str:
    table = connection.ops.quote_name(RequestLog._meta.db_table)
    names = [connection.ops.quote_name(f.column) for f in _COLUMNS]
    record = ", ".join(f"{connection.ops.quote_name(f.attname)} {f.db_type(connection)}" for f in _COLUMNS)
    values = ", ".join(connection.ops.quote_name(f.attname) for f in _COLUMNS)
    return (f"INSERT INTO {table} ({', '.join(names)}) SELECT {values} FROM ROWS FROM "
            f"(jsonb_to_recordset(%s::jsonb) AS ({record})) WITH ORDINALITY AS r({values}, n) ORDER BY n RETURNING id")


def _is_outage(exc: Exception) -> bool:
    return isinstance(exc, DatabaseError) and not isinstance(exc, _BAD_ROW_ERRORS)


def _outage(rows: list[RequestLog], exc: Exception) -> list[RequestLog]:
    if _stats.outage_since is None:
        _stats.outage_since = time.time()
        log.warning("request log: the database is unavailable (%s: %s); rows are spooled until it answers",
                    type(exc).__name__, str(exc)[:200])
    # The connection may be broken for good; the next attempt opens a new one.
    try:
        connection.close()
    except DatabaseError:
        pass
    return rows


def _retry_due() -> bool:
    return time.monotonic() >= _retry_at


def _after_write(spooled: list[RequestLog]) -> None:
    global _retry_at
    if spooled:
        _spool.add(spooled)
        _retry_at = time.monotonic() + settings.FREELLM_LOG_RETRY_SECONDS
    elif _stats.outage_since is not None:
        log.warning("request log: the database answers again after %.0f s", time.time() - _stats.outage_since)
        _stats.outage_since = None


def _next_batch() -> list[RequestLog]:
    # While the database is away new rows join the spool (in order) and only a retry touches it.
    if _stats.outage_since is not None and not _retry_due():
        _spool.add(_queue[:])
        _queue.clear()
        return []
    if len(_spool):
        rows = _spool.take() + _queue[:]
        _queue.clear()
        return rows
    batch = _queue[:_BATCH]
    del _queue[:_BATCH]
    return batch


# A flush waits this long for more rows: one insert and one live-feed message for the requests of a quarter
# second (at 75 sequential requests a second, 19 rows instead of 4; the benchmark's sequential figures).
FLUSH_WAIT_SECONDS = 0.25


async def request_logs_flush() -> None:
    await asyncio.sleep(FLUSH_WAIT_SECONDS)
    while batch := _next_batch():
        for start in range(0, len(batch), _BATCH):
            written, spooled = await sync_to_async(_write)(batch[start:start + _BATCH])
            if written:
                await live_rows_publish(written)
            if spooled:
                _after_write(spooled + batch[start + _BATCH:])
                break
            _after_write([])
        # The rows that came in during the write wait with the next ones, unless they fill a batch already:
        # under load the write itself took a few milliseconds, and writing those few at once made the
        # batches small (c=32: 23 rows an insert, where a row costs the gateway about twice as much as at 200).
        if _queue and len(_queue) < _BATCH and _stats.outage_since is None:
            await asyncio.sleep(FLUSH_WAIT_SECONDS)
    if _stats.outage_since is not None:
        _retry_later()


_retry_timer: asyncio.TimerHandle | None = None


def _retry_later() -> None:
    """While rows wait in the spool, try the database again every FREELLM_LOG_RETRY_SECONDS. A timer, not a
    task: an outage must not hold up shutdown or the wait for idle background work."""
    global _retry_timer
    if _retry_timer is not None and not _retry_timer.cancelled() and _retry_timer.when() > asyncio.get_running_loop().time():
        return
    _retry_timer = asyncio.get_running_loop().call_later(max(0.0, _retry_at - time.monotonic()), _retry_now)


def _retry_now() -> None:
    if len(_spool) or _queue:
        _start_flush()


def request_logs_flush_sync() -> None:
    while batch := _next_batch():
        for start in range(0, len(batch), _BATCH):
            written, spooled = _write(batch[start:start + _BATCH])
            if written:
                live_rows_publish_sync(written)
            if spooled:
                _after_write(spooled + batch[start + _BATCH:])
                return
            _after_write([])


def request_logs_idle() -> bool:
    # Spooled rows are work still to do (written when the database answers again).
    return not _queue and not _flushing and not len(_spool)


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
