"""A batch of request-log rows is stored as it was logged, whichever way the database takes it (PostgreSQL: one
JSON document unpacked by the server; elsewhere bulk_create), and each written row knows its id, which the
live feed sends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from analytics import services
from analytics.models import RequestLog
from analytics.services import request_log_enqueue, request_log_state_reset, request_logs_flush


@pytest.fixture(autouse=True)
def fresh_log_state():
    request_log_state_reset()
    yield
    request_log_state_reset()


def _logged(user_id: int, i: int) -> dict:
    return {
        "request_id": f"{i:032x}", "user_id": user_id if i % 2 else None, "api_key_id": None,
        "endpoint": "chat", "dialect": ("openai", "anthropic", "gemini")[i % 3],
        "requested_model": f"auto-{i} héllo ✓", "provider": "groq", "model": "llama-3.3",
        "key_label": "key\tone" if i == 0 else f"k{i}", "stream": bool(i % 2), "status_code": 200 + i,
        "outcome": "ok", "attempts": i + 1,
        "trail": [{"route": f"groq/llama/k{i}", "outcome": "ok", "ms": i, "note": "ünïcode\nline"}] * (i + 1),
        "prompt_tokens": 10 * i, "completion_tokens": 7 * i, "latency_ms": 100 + i,
        "first_token_ms": None if i == 1 else 20 + i, "session_id": f"s-{i}", "switched": "" if i else "a → b",
        "error": "multi\nline",
    }


@pytest.mark.django_db(transaction=True)
async def test_a_batch_is_stored_as_logged_and_each_row_knows_its_id(django_user_model, monkeypatch):
    user = await django_user_model.objects.acreate(username="ann")
    published: list[RequestLog] = []

    async def publish(rows):
        published.extend(rows)

    monkeypatch.setattr(services, "live_rows_publish", publish)
    logged = [_logged(user.id, i) for i in range(5)]
    before = datetime.now(UTC)
    for fields in logged:
        request_log_enqueue(**dict(fields))
    await request_logs_flush()

    def stored():
        rows = {row.request_id: row for row in RequestLog.objects.all()}
        connections.close_all()
        return rows

    rows = await sync_to_async(stored)()
    assert sorted(rows) == [fields["request_id"] for fields in logged]
    for fields in logged:
        row = rows[fields["request_id"]]
        assert {name: getattr(row, name) for name in fields} == fields
        assert before <= row.created_at <= datetime.now(UTC)
    # The ids the writer handed on (to the live feed) are those the database gave each row.
    assert {row.request_id: row.id for row in published} == {rid: row.id for rid, row in rows.items()}
    assert all(not row._state.adding for row in published)
