"""The quota store remembers each route's last success and last error (kind, text, when), in both backends."""

from __future__ import annotations

import pytest

from providers.adapters.base import ErrorKind
from routing.quota.base import Limits, Route

ROUTE = Route("groq", "llama", "groq-0", Limits(rpm=10))


async def test_last_success_and_last_error_are_kept(quota_store, clock):
    fresh = await quota_store.status(ROUTE)
    assert fresh.last_success_at is None and fresh.last_error is None

    await quota_store.record(ROUTE, None)
    ok_at = clock()
    clock.advance(5)
    await quota_store.record(ROUTE, ErrorKind.SERVER, message="upstream said 503: " + "x" * 400)
    status = await quota_store.status(ROUTE)
    assert status.last_success_at == pytest.approx(ok_at)
    assert status.last_error.kind == "server_error" and status.last_error.at == pytest.approx(ok_at + 5)
    assert status.last_error.message.startswith("upstream said 503") and len(status.last_error.message) == 300

    clock.advance(5)
    await quota_store.record(ROUTE, None)
    status = await quota_store.status(ROUTE)
    # A success does not erase the last error: both are history.
    assert status.last_success_at == pytest.approx(ok_at + 10) and status.last_error.kind == "server_error"
