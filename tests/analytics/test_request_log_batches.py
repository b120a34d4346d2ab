"""Request-log rows that come in while a batch is being written wait for the next ones: under load a write
takes a few milliseconds, and writing what arrived meanwhile at once made the inserts small and many."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from analytics import services
from analytics.models import RequestLog
from analytics.services import request_log_enqueue, request_log_state_reset, request_logs_idle


def _row(n: int) -> dict:
    return {"endpoint": "chat", "requested_model": f"m{n}", "status_code": 200, "outcome": "ok"}


@pytest.mark.django_db(transaction=True)
async def test_rows_that_arrive_during_a_write_share_the_next_insert(monkeypatch):
    request_log_state_reset()
    loop = asyncio.get_running_loop()
    batches: list[list[str]] = []
    write = services._write
    late = asyncio.Event()

    def arrive_late():
        request_log_enqueue(**_row(3))
        late.set()

    def recording_write(rows):
        batches.append([row.requested_model for row in rows])
        if len(batches) == 1:
            # One row arrives while this write runs, another a little after it.
            loop.call_soon_threadsafe(lambda: request_log_enqueue(**_row(2)))
            loop.call_soon_threadsafe(lambda: loop.call_later(0.05, arrive_late))
        return write(rows)

    monkeypatch.setattr(services, "_write", recording_write)
    request_log_enqueue(**_row(1))
    await asyncio.wait_for(late.wait(), timeout=5)
    for _ in range(300):
        if request_logs_idle():
            break
        await asyncio.sleep(0.01)

    stored = await sync_to_async(lambda: sorted(RequestLog.objects.values_list("requested_model", flat=True)))()
    await sync_to_async(connections.close_all)()
    assert stored == ["m1", "m2", "m3"]
    assert batches == [["m1"], ["m2", "m3"]]
