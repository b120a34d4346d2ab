"""Sticky sessions: key derivation, both store backends, degraded Redis, admin mirror."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis
from django.test import override_settings

from analytics.models import StickySession as StickySessionRow
from analytics.sessions import session_log, session_log_drain
from routing.sessions import (
    REDIS_KEY_PREFIX,
    DegradingSessionStore,
    LocalSessionStore,
    RedisSessionStore,
    SessionSource,
    get_session_store,
    session_key,
)

CONVERSATION = {
    "model": "chat",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Plan a trip to Lisbon."},
    ],
}


def test_header_wins_over_user_and_messages():
    key, source = session_key(
        headers={"X-Session-Id": "abc"}, body={**CONVERSATION, "user": "u1"}, api_key_id=1
    )
    assert source == SessionSource.HEADER
    assert key == session_key(headers={"x-session-id": "abc"}, body={}, api_key_id=1)[0]
    assert key != session_key(headers={"x-session-id": "abd"}, body={}, api_key_id=1)[0]


def test_user_field_when_no_header():
    key, source = session_key(headers={}, body={**CONVERSATION, "user": "u1"}, api_key_id=1)
    assert source == SessionSource.USER
    other_turn = {"user": "u1", "messages": [{"role": "user", "content": "something else"}]}
    assert key == session_key(headers={}, body=other_turn, api_key_id=1)[0]


def test_conversation_hash_follows_the_opening_not_later_turns():
    key, source = session_key(headers={}, body=CONVERSATION, api_key_id=1)
    assert source == SessionSource.CONVERSATION
    later = {
        "messages": [
            *CONVERSATION["messages"],
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "And Porto?"},
        ]
    }
    assert session_key(headers={}, body=later, api_key_id=1)[0] == key
    different_opening = {"messages": [CONVERSATION["messages"][0], {"role": "user", "content": "Plan Rome."}]}
    assert session_key(headers={}, body=different_opening, api_key_id=1)[0] != key


def test_same_opening_from_two_unified_keys_does_not_collide():
    assert session_key(headers={}, body=CONVERSATION, api_key_id=1) != session_key(
        headers={}, body=CONVERSATION, api_key_id=2
    )
    # Also for explicit ids: one client cannot join another client's session by guessing its id.
    assert session_key(headers={"x-session-id": "s"}, body={}, api_key_id=1) != session_key(
        headers={"x-session-id": "s"}, body={}, api_key_id=2
    )


def test_key_carries_no_raw_user_data():
    key, _ = session_key(headers={"x-session-id": "alice@example.com"}, body={}, api_key_id=1)
    assert "alice" not in key and len(key) == 32 and int(key, 16) >= 0


async def test_local_store_set_switch_touch_drop():
    store = LocalSessionStore()
    assert await store.get("k") is None
    first = await store.set("k", provider="groq", model="llama")
    assert (first.provider, first.model, first.switches) == ("groq", "llama", 0)
    switched = await store.record_switch("k", provider="cerebras", model="gpt-oss")
    assert (switched.provider, switched.switches, switched.created) == ("cerebras", 1, first.created)
    touched = await store.touch("k")
    got = await store.get("k")
    assert got.model == "gpt-oss" and got.last_used >= switched.last_used
    assert touched == got
    await store.drop("k")
    assert await store.get("k") is None


@override_settings(FREELLM_STICKY_TTL=1)
async def test_local_store_ttl_slides_and_expires():
    store = LocalSessionStore()
    await store.set("k", provider="groq", model="llama")
    await asyncio.sleep(0.6)
    await store.touch("k")
    await asyncio.sleep(0.6)
    # 1.2 s after creation but only 0.6 s after the touch: still alive.
    assert await store.get("k") is not None
    await asyncio.sleep(1.1)
    assert await store.get("k") is None
    await store.touch("k")
    assert await store.get("k") is None


async def test_redis_store_round_trip_and_ttl(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    store = RedisSessionStore(client)
    try:
        first = await store.set("k", provider="groq", model="llama")
        ttl = await client.ttl(REDIS_KEY_PREFIX + "k")
        assert 1700 < ttl <= 1800
        switched = await store.record_switch("k", provider="cerebras", model="gpt-oss")
        assert (switched.provider, switched.model, switched.switches) == ("cerebras", "gpt-oss", 1)
        assert switched.created == pytest.approx(first.created)
        got = await store.get("k")
        assert (got.provider, got.model, got.switches) == ("cerebras", "gpt-oss", 1)
        # Sliding: a touch puts the full TTL back.
        await client.expire(REDIS_KEY_PREFIX + "k", 5)
        touched = await store.touch("k")
        assert await client.ttl(REDIS_KEY_PREFIX + "k") > 1700
        # ...and answers the session as it is now, in the same round trip.
        assert (touched.provider, touched.switches) == ("cerebras", 1) and touched.last_used >= got.last_used
        await store.drop("k")
        assert await store.get("k") is None
        # Touching a session that is gone must not resurrect it.
        assert await store.touch("k") is None
        assert not await client.exists(REDIS_KEY_PREFIX + "k")
    finally:
        await client.aclose()


async def test_store_follows_redis_url_setting(redis_url):
    with override_settings(REDIS_URL=""):
        assert isinstance(get_session_store(), LocalSessionStore)
    with override_settings(REDIS_URL=redis_url):
        store = get_session_store()
        assert isinstance(store, DegradingSessionStore)
        await store.set("shared", provider="groq", model="llama")
    # Another process (here: a plain client) sees the session.
    assert redis.Redis.from_url(redis_url).hget(REDIS_KEY_PREFIX + "shared", "model") == b"llama"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_redis_down_degrades_to_local_without_error():
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0"):
        store = get_session_store()
        await store.set("degraded", provider="groq", model="llama")
        got = await store.get("degraded")
    assert got is not None and got.model == "llama"


@pytest.mark.django_db(transaction=True)
async def test_session_log_mirrors_to_admin(admin_client_async):
    session = await LocalSessionStore().set("f" * 32, provider="groq", model="llama")
    session_log(
        key="f" * 32,
        source=SessionSource.HEADER,
        api_key_id=None,
        provider=session.provider,
        model=session.model,
        switches=0,
        created=session.created,
        last_used=session.last_used,
    )
    await session_log_drain()
    session_log(
        key="f" * 32,
        source=SessionSource.HEADER,
        api_key_id=None,
        provider="cerebras",
        model="gpt-oss",
        switches=1,
        created=session.created,
        last_used=session.last_used + 1,
        switch_reason="groq/llama → cerebras/gpt-oss: rate_limited",
    )
    await session_log_drain()
    row = await StickySessionRow.objects.aget(key="f" * 32)
    assert (row.provider, row.model, row.switches) == ("cerebras", "gpt-oss", 1)
    assert row.last_switch_reason == "groq/llama → cerebras/gpt-oss: rate_limited"
    page = await admin_client_async.get("/admin/analytics/stickysession/")
    assert page.status_code == 200
    assert "cerebras/gpt-oss" in page.content.decode()
    assert "f" * 32 not in page.content.decode()


@pytest.fixture
async def admin_client_async(db):
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model
    from django.test import AsyncClient

    user = await sync_to_async(get_user_model().objects.create_superuser)("root", "root@example.com", "pw")
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    return client


@pytest.mark.django_db
def test_members_see_only_the_sessions_of_their_own_keys(client, django_user_model):
    from datetime import UTC, datetime

    from django.contrib.auth.models import Permission

    from routing.services import api_key_create

    alice = django_user_model.objects.create_user("alice", password="pw", is_staff=True)
    bob = django_user_model.objects.create_user("bob", password="pw", is_staff=True)
    alice.user_permissions.add(Permission.objects.get(codename="view_stickysession"))
    now = datetime.now(UTC)
    for owner, model in ((alice, "alice-model"), (bob, "bob-model")):
        key, _ = api_key_create(user=owner, name="k")
        StickySessionRow.objects.create(
            key=owner.username * 4,
            source="header",
            api_key=key,
            provider="groq",
            model=model,
            created=now,
            last_used=now,
        )
    client.force_login(alice)
    page = client.get("/admin/analytics/stickysession/").content.decode()
    assert "groq/alice-model" in page and "bob-model" not in page
    alice.user_permissions.add(Permission.objects.get(codename="view_all_requests"))
    alice = django_user_model.objects.get(pk=alice.pk)  # permissions are cached per user object
    client.force_login(alice)
    page = client.get("/admin/analytics/stickysession/").content.decode()
    assert "groq/alice-model" in page and "groq/bob-model" in page


@pytest.mark.django_db(transaction=True)
async def test_session_log_batches_turns_and_keeps_the_last_switch_reason():
    common = {"source": SessionSource.USER, "api_key_id": None, "provider": "groq", "created": 1e9}
    session_log(key="a" * 32, model="m1", switches=0, last_used=1e9 + 1, **common)
    session_log(
        key="a" * 32, model="m2", switches=1, last_used=1e9 + 2, switch_reason="m1 → m2: failing", **common
    )
    session_log(key="a" * 32, model="m2", switches=1, last_used=1e9 + 3, **common)
    session_log(key="b" * 32, model="m1", switches=0, last_used=1e9 + 4, **common)
    await session_log_drain()
    a = await StickySessionRow.objects.aget(key="a" * 32)
    assert (a.model, a.switches, a.last_switch_reason) == ("m2", 1, "m1 → m2: failing")
    assert a.last_used.timestamp() == 1e9 + 3
    # A later ordinary turn, written in a batch of its own, keeps the recorded reason too.
    session_log(key="a" * 32, model="m2", switches=1, last_used=1e9 + 5, **common)
    await session_log_drain()
    a = await StickySessionRow.objects.aget(key="a" * 32)
    assert a.last_switch_reason == "m1 → m2: failing" and a.last_used.timestamp() == 1e9 + 5
    assert await StickySessionRow.objects.acount() == 2


@pytest.mark.django_db
def test_prune_deletes_sessions_unused_past_the_retention():
    from datetime import UTC, datetime, timedelta

    from analytics.sessions import sticky_sessions_prune

    now = datetime.now(UTC)
    for name, age in (("old", 40), ("new", 1)):
        StickySessionRow.objects.create(
            key=name * 8,
            source="user",
            provider="p",
            model="m",
            created=now,
            last_used=now - timedelta(days=age),
        )
    assert sticky_sessions_prune(keep_days=30) == 1
    assert list(StickySessionRow.objects.values_list("key", flat=True)) == ["new" * 8]
