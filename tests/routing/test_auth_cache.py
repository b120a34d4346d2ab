"""The in-process cache of unified keys: when an entry expires, one request looks the key up again."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import connections

from routing import auth
from routing.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def key():
    auth._cache.clear()
    user = await get_user_model().objects.acreate(username="dana")
    api_key, raw = await sync_to_async(api_key_create)(user=user, name="laptop")
    yield api_key, raw
    auth._cache.clear()
    await sync_to_async(connections.close_all)()


def _expire(raw: str) -> None:
    digest = auth.hash_api_key(raw)
    api_key, version, at = auth._cache[digest]
    auth._cache[digest] = (api_key, version, at - auth.CACHE_SECONDS)


async def test_requests_in_flight_when_the_entry_expires_make_one_lookup(key, monkeypatch):
    _, raw = key
    assert await auth.authenticate_key(raw) is not None
    lookups = 0
    lookup = auth.api_key_authenticate

    async def counted(value):
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.05)  # a database under load
        return await lookup(value)

    monkeypatch.setattr(auth, "api_key_authenticate", counted)
    _expire(raw)

    found = await asyncio.gather(*(auth.authenticate_key(raw) for _ in range(30)))

    assert lookups == 1
    assert all(api_key is not None for api_key in found)
    # The lookup renewed the entry: the next requests make none.
    assert await auth.authenticate_key(raw) is not None and lookups == 1


async def test_an_expired_entry_of_a_revoked_key_is_not_served(key):
    api_key, raw = key
    assert await auth.authenticate_key(raw) is not None
    _expire(raw)

    await sync_to_async(api_key_revoke)(api_key=api_key)

    assert await auth.authenticate_key(raw) is None
