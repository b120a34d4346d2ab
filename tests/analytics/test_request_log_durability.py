"""The request log keeps its rows: text made safe before insert, a refused batch retried row by row, rows
that arrive during a write batched with the next ones, rows spooled through a database outage and written
when it returns, losses counted and shown; meanwhile the API serves keys it knows and answers 503 (not 500)
for others."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from analytics import services
from analytics.models import RequestLog
from analytics.services import (
    request_log_enqueue,
    request_log_state_reset,
    request_log_stats,
    request_logs_flush,
    request_logs_idle,
)
from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def fresh_log_state(settings):
    settings.FREELLM_LOG_RETRY_SECONDS = 0.1
    request_log_state_reset()
    yield
    request_log_state_reset()


def _row(**extra) -> dict:
    return {"endpoint": "chat", "requested_model": "auto", "status_code": 200, "outcome": "ok", **extra}


def test_control_characters_and_lone_surrogates_never_reach_the_database(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], ["llama"])
    add_chain("auto", ["groq/llama"])
    headers = {"Authorization": f"Bearer {gateway.api_key}"}

    def post(model: str) -> int:
        return httpx.post(f"{gateway.base_url}/chat/completions", headers=headers,
                          json={"model": model, "messages": HI}).status_code

    # One key holder's odd model name among concurrent requests must not take their rows with it.
    models = ["auto"] * 20 + ["x\u0000y\u001b[31m"]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, models))
    wait_until_idle()

    assert statuses.count(200) == 20
    stored = list(RequestLog.objects.values_list("requested_model", flat=True))
    assert len(stored) == 21
    odd = next(name for name in stored if name != "auto")
    assert "\x00" not in odd and "\x1b" not in odd and odd.startswith("x") and "y" in odd


@pytest.mark.django_db(transaction=True)
async def test_a_row_the_database_refuses_loses_only_itself():
    for i in range(5):
        # A negative latency breaks the column's CHECK constraint: a stand-in for any row the database refuses.
        request_log_enqueue(**_row(latency_ms=-1 if i == 2 else i))
    await request_logs_flush()

    assert await _stored_when_idle("latency_ms") == [0, 1, 3, 4]
    assert request_log_stats().dropped == 1


async def _stored_when_idle(column: str) -> list:
    """The rows' ``column``, sorted, once the writer has nothing left to do."""
    for _ in range(300):
        if request_logs_idle():
            break
        await asyncio.sleep(0.01)
    stored = await sync_to_async(lambda: sorted(RequestLog.objects.values_list(column, flat=True)))()
    await sync_to_async(connections.close_all)()
    return stored


@pytest.mark.django_db(transaction=True)
async def test_rows_that_arrive_during_a_write_share_the_next_insert(monkeypatch):
    """Under load a write takes a few milliseconds; writing what arrived meanwhile at once made the inserts
    small and many."""
    loop = asyncio.get_running_loop()
    batches: list[list[str]] = []
    write = services._write
    late = asyncio.Event()

    def arrive_late():
        request_log_enqueue(**_row(requested_model="m3"))
        late.set()

    def recording_write(rows):
        batches.append([row.requested_model for row in rows])
        if len(batches) == 1:
            # One row arrives while this write runs, another a little after it.
            loop.call_soon_threadsafe(lambda: request_log_enqueue(**_row(requested_model="m2")))
            loop.call_soon_threadsafe(lambda: loop.call_later(0.05, arrive_late))
        return write(rows)

    monkeypatch.setattr(services, "_write", recording_write)
    request_log_enqueue(**_row(requested_model="m1"))
    await asyncio.wait_for(late.wait(), timeout=5)

    assert await _stored_when_idle("requested_model") == ["m1", "m2", "m3"]
    assert batches == [["m1"], ["m2", "m3"]]


@contextmanager
def _sqlite_locked():
    """The embedded database unavailable to writers: another connection holds its write lock."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 50")  # this connection gives up fast instead of waiting 20 s
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def _needs_sqlite():
    if connection.vendor != "sqlite":
        pytest.skip("locks the embedded SQLite file; test_an_outage_of_postgresql... covers PostgreSQL")


@pytest.mark.django_db(transaction=True)
def test_rows_written_during_an_outage_are_spooled_and_written_when_it_ends():
    _needs_sqlite()
    with _sqlite_locked():
        for i in range(3):
            request_log_enqueue(**_row(latency_ms=i))
        assert RequestLog.objects.count() == 0
        assert request_log_stats().spooled == 3 and request_log_stats().outage_since is not None
    time.sleep(0.15)  # FREELLM_LOG_RETRY_SECONDS

    request_log_enqueue(**_row(latency_ms=3))

    assert sorted(RequestLog.objects.values_list("latency_ms", flat=True)) == [0, 1, 2, 3]
    stats = request_log_stats()
    assert (stats.spooled, stats.dropped, stats.outage_since) == (0, 0, None)


@pytest.mark.django_db(transaction=True)
def test_the_spool_is_bounded_memory_then_file_and_losses_are_counted_and_shown(settings, admin_user):
    from django.test import Client

    _needs_sqlite()
    settings.FREELLM_LOG_SPOOL_ROWS = 2
    settings.FREELLM_LOG_SPOOL_BYTES = 1500  # about two rows
    spool_dir = settings.VAR_DIR / "spool"
    client = Client()
    client.force_login(admin_user)
    with _sqlite_locked():
        for i in range(6):
            request_log_enqueue(**_row(latency_ms=i))
        assert any(spool_dir.glob("request-log-*.jsonl"))
        stats = request_log_stats()
        assert stats.dropped >= 1 and stats.spooled + stats.dropped == 6
    page = client.get("/admin/analytics/requestlog/").content.decode()
    assert f"{stats.dropped} request-log row(s) were lost" in page

    time.sleep(0.15)
    request_log_enqueue(**_row(latency_ms=99))
    written = sorted(RequestLog.objects.values_list("latency_ms", flat=True))
    # The oldest rows (memory first, then the file) survived, in order; the newest ones were dropped.
    assert written == [*range(stats.spooled), 99]
    assert not any(spool_dir.glob("request-log-*.jsonl"))


@contextmanager
def _postgres_down():
    """The test database refuses connections and its open sessions are cut, then it comes back."""
    import psycopg

    s = connection.settings_dict
    admin = psycopg.connect(host=s.get("HOST") or "127.0.0.1", port=s.get("PORT") or 5432, user=s.get("USER"),
                            password=s.get("PASSWORD") or None, dbname="postgres", autocommit=True)
    name = s["NAME"]
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                  (name,))
    try:
        yield
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
        connection.close()  # this thread's session was cut too


def test_an_outage_of_postgresql_keeps_known_keys_working_and_the_rows(gateway, emulator, django_user_model):
    from routing.services import api_key_create

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (CI runs the suite on it)")
    add_provider(emulator, "groq", ["ok"], ["llama"])
    add_chain("auto", ["groq/llama"])
    _, unknown_key = api_key_create(user=django_user_model.objects.get(username="alice"), name="never-used")
    known = {"Authorization": f"Bearer {gateway.api_key}"}
    url = f"{gateway.base_url}/chat/completions"
    assert httpx.post(url, headers=known, json={"model": "auto", "messages": HI}).status_code == 200
    wait_until_idle()

    with _postgres_down():
        during = [httpx.post(url, headers=known, json={"model": "auto", "messages": HI}).status_code for _ in range(3)]
        unknown = httpx.post(url, headers={"Authorization": f"Bearer {unknown_key}"},
                             json={"model": "auto", "messages": HI})
        wait_until_idle()
    assert during == [200, 200, 200]
    assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "database_unavailable"
    assert unknown.headers["Retry-After"]

    deadline = time.monotonic() + 10
    while RequestLog.objects.filter(status_code=200).count() < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert RequestLog.objects.filter(status_code=200).count() == 4
    assert request_log_stats().dropped == 0
