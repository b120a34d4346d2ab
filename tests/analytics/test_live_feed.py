"""The admin's live feed: /ws/live/ through the real ASGI app (origin check, session auth, consumer), fed
by the request log writer through the channel layer (in-memory, and channels_redis on a real Redis)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import connections

from analytics.models import RequestLog
from analytics.services import request_log_enqueue, request_logs_flush, request_logs_idle
from tests.polling import wait_until_async

pytestmark = pytest.mark.django_db(transaction=True)

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(autouse=True)
async def close_async_connections():
    """The async ORM and the consumer run in asgiref's worker thread; close its connection so the test
    database can be dropped (PostgreSQL refuses while a session is open)."""
    yield
    await sync_to_async(connections.close_all)()


def _origin() -> bytes:
    host = next(h for h in django_settings.ALLOWED_HOSTS if h != "*" and not h.startswith("."))
    return f"http://{host}".encode()


@sync_to_async
def _session_cookie(client, user) -> bytes:
    client.force_login(user)
    return f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}".encode()


def _communicator(cookie: bytes | None = None, origin: bytes | None = None) -> WebsocketCommunicator:
    from freellm.asgi import application

    headers = [(b"origin", origin or _origin())]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/live/", headers=headers)


async def _log_and_flush(**fields) -> None:
    request_log_enqueue(**fields)
    await request_logs_flush()
    # The task request_log_enqueue started may hold the batch; let it finish too.
    await wait_until_async(request_logs_idle, timeout=2, interval=0.01)


def _fields(user, **extra) -> dict:
    return dict(
        user_id=user.id,
        endpoint="chat",
        requested_model="fast",
        provider="groq",
        model="llama-3.3-70b",
        key_label="groq-0",
        status_code=200,
        outcome="ok",
        attempts=2,
        trail=[{"route": "gemini/gemini-2.0-flash/g-0", "outcome": "rate_limited", "ms": 80},
               {"route": "groq/llama-3.3-70b/groq-0", "outcome": "ok", "ms": 200}],
        prompt_tokens=11,
        completion_tokens=7,
        latency_ms=290,
        error="",
        **extra,
    )


async def _staff_receives_the_row(client, staff_user) -> None:
    communicator = _communicator(await _session_cookie(client, staff_user))
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    try:
        await _log_and_flush(**_fields(staff_user, session_id="live-1"))
        message = await communicator.receive_json_from(timeout=5)
    finally:
        await communicator.disconnect()

    row = await RequestLog.objects.aget(session_id="live-1")
    assert message["id"] == row.id
    assert message["user"] == staff_user.username
    assert (message["provider"], message["model"], message["key_label"]) == ("groq", "llama-3.3-70b", "groq-0")
    assert (message["outcome"], message["status_code"], message["attempts"]) == ("ok", 200, 2)
    assert message["prompt_tokens"] == 11 and message["latency_ms"] == 290
    # The feed carries no key, trail or error text.
    assert not {"api_key", "api_key_id", "trail", "error"} & set(message)


async def test_staff_receive_each_logged_request(client, staff_user, settings):
    settings.CHANNEL_LAYERS = IN_MEMORY
    await _staff_receives_the_row(client, staff_user)


async def test_staff_receive_rows_through_redis_channel_layer(client, staff_user, settings, redis_url):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }
    await _staff_receives_the_row(client, staff_user)


async def test_anonymous_is_refused(settings):
    settings.CHANNEL_LAYERS = IN_MEMORY
    communicator = _communicator()
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


async def test_member_is_refused_even_with_view_permission(client, member_user, settings):
    settings.CHANNEL_LAYERS = IN_MEMORY
    communicator = _communicator(await _session_cookie(client, member_user))
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


async def test_foreign_origin_is_refused(client, staff_user, settings):
    """Another site's page cannot ride on the admin's session cookie."""
    settings.CHANNEL_LAYERS = IN_MEMORY
    communicator = _communicator(await _session_cookie(client, staff_user), origin=b"http://evil.example")
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


async def test_a_broken_channel_layer_never_loses_the_row(staff_user, settings):
    # Nothing listens on port 1: every publish fails at once.
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    await _log_and_flush(**_fields(staff_user, session_id="no-layer"))
    assert await RequestLog.objects.filter(session_id="no-layer").aexists()


def test_sync_writer_publishes_too(staff_user, settings):
    """Outside an event loop (management commands, Celery) rows are written and published at once."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from analytics.live import LIVE_GROUP

    settings.CHANNEL_LAYERS = IN_MEMORY
    layer = get_channel_layer()

    async def listen():
        channel = await layer.new_channel()
        await layer.group_add(LIVE_GROUP, channel)
        return channel

    channel = async_to_sync(listen)()
    request_log_enqueue(**_fields(staff_user, session_id="sync-1"))

    async def receive():
        return await asyncio.wait_for(layer.receive(channel), 5)

    message = async_to_sync(receive)()
    assert message["type"] == "live.rows"
    assert [row["id"] for row in message["rows"]] == [RequestLog.objects.get(session_id="sync-1").id]


async def test_a_real_gateway_request_reaches_the_feed(gateway, emulator, client, staff_user, settings, redis_url):
    """End to end: openai client → gateway (its own server thread and loop) → request log → Redis → feed."""
    from tests.fixtures_gateway import add_chain, add_provider

    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }

    @sync_to_async
    def configure():
        add_provider(emulator, "groq", ["k;429=30"], ["llama-3.3-70b"])
        add_provider(emulator, "cerebras", ["c-a"], ["qwen-3"])
        add_chain("auto", ["groq/llama-3.3-70b", "cerebras/qwen-3"])

    await configure()
    communicator = _communicator(await _session_cookie(client, staff_user))
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    try:
        completion = await asyncio.to_thread(
            lambda: gateway.openai().chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hello live feed"}]
            )
        )
        message = await communicator.receive_json_from(timeout=10)
    finally:
        await communicator.disconnect()

    assert completion.choices[0].message.content == "Echo: hello live feed"
    assert message["user"] == "alice" and message["requested_model"] == "auto"
    assert (message["provider"], message["model"], message["attempts"], message["outcome"]) == (
        "cerebras", "qwen-3", 2, "ok")
    assert message["completion_tokens"] > 0


async def test_an_unreachable_layer_is_reported_once_per_outage(settings, caplog):
    from datetime import UTC, datetime

    from channels.layers import channel_layers

    from analytics import live
    from analytics.models import RequestLog

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}
    channel_layers.backends.clear()
    row = RequestLog(created_at=datetime.now(UTC), endpoint="chat", status_code=200, outcome="ok")
    try:
        with caplog.at_level("INFO", logger="analytics.live"):
            for _ in range(3):
                await live.live_rows_publish([row])
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1
    finally:
        channel_layers.backends.clear()
        live._breaker.reset()
