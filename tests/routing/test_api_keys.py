"""Unified API keys: stored as a SHA-256 hash plus a visible prefix, revocable, authenticated by hash."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from routing.models import ApiKey
from routing.selectors import api_key_authenticate
from routing.services import api_key_create, api_key_revoke


@pytest.fixture
async def close_async_connections():
    """The async ORM runs in asgiref's worker thread; close its connection so the test DB can be dropped."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user(username="alice", password="alice-pass-123")


def _row(api_key: ApiKey) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM routing_apikey WHERE id = %s", [api_key.pk])
        return cursor.fetchone()


def test_key_is_stored_as_hash_and_prefix_only(user):
    api_key, raw = api_key_create(user=user, name="laptop")

    assert raw.startswith("fl-") and len(raw) > 40
    assert api_key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert api_key.prefix == raw[:11]
    row = _row(api_key)
    assert not any(isinstance(value, str) and raw in value for value in row)
    assert str(api_key) == f"{raw[:11]}… (laptop)"


def test_every_key_is_different(user):
    raws = {api_key_create(user=user, name="k")[1] for _ in range(5)}

    assert len(raws) == 5


def test_revoke_is_recorded_once(user):
    api_key, _ = api_key_create(user=user, name="k")

    api_key_revoke(api_key=api_key)
    first = ApiKey.objects.get(pk=api_key.pk).revoked_at
    api_key_revoke(api_key=ApiKey.objects.get(pk=api_key.pk))

    assert first is not None
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at == first
    assert not ApiKey.objects.get(pk=api_key.pk).is_active


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
async def test_authenticate_finds_the_key_and_its_user():
    user = await get_user_model().objects.acreate(username="bob")
    api_key, raw = await _acreate(user, "ci")

    found = await api_key_authenticate(raw)

    assert found is not None and found.pk == api_key.pk
    assert found.user.username == "bob"  # loaded with the key, no extra query needed


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
async def test_authenticate_refuses_unknown_revoked_and_deactivated():
    user = await get_user_model().objects.acreate(username="carol")
    _, raw = await _acreate(user, "a")
    revoked, revoked_raw = await _acreate(user, "b")
    await ApiKey.objects.filter(pk=revoked.pk).aupdate(revoked_at=timezone.now())

    assert await api_key_authenticate(raw + "x") is None
    assert await api_key_authenticate("sk-" + raw[3:]) is None
    assert await api_key_authenticate("") is None
    assert await api_key_authenticate(None) is None
    assert await api_key_authenticate(revoked_raw) is None
    assert await api_key_authenticate(raw) is not None

    await get_user_model().objects.filter(pk=user.pk).aupdate(is_active=False)
    assert await api_key_authenticate(raw) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
async def test_last_used_is_written_at_most_once_a_minute():
    user = await get_user_model().objects.acreate(username="dave")
    api_key, raw = await _acreate(user, "k")

    await api_key_authenticate(raw)
    first = (await ApiKey.objects.aget(pk=api_key.pk)).last_used_at
    await api_key_authenticate(raw)
    second = (await ApiKey.objects.aget(pk=api_key.pk)).last_used_at

    assert first is not None and second == first

    long_ago = timezone.now() - timedelta(minutes=5)
    await ApiKey.objects.filter(pk=api_key.pk).aupdate(last_used_at=long_ago)
    returned = await api_key_authenticate(raw)
    third = (await ApiKey.objects.aget(pk=api_key.pk)).last_used_at

    assert third > long_ago + timedelta(minutes=4)
    assert returned.last_used_at == third


async def _acreate(user, name: str):
    return await sync_to_async(api_key_create)(user=user, name=name)


def test_create_api_key_command_prints_the_key_once(user):
    out, err = io.StringIO(), io.StringIO()

    call_command("create_api_key", "--user", "alice", "--name", "ci", stdout=out, stderr=err)

    raw = out.getvalue().strip()
    api_key = ApiKey.objects.get()
    assert api_key.name == "ci" and api_key.user == user
    assert api_key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert "shown once" in err.getvalue() and raw not in err.getvalue()


def test_create_api_key_for_an_unknown_user_fails_clearly(db):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("create_api_key", "--user", "nobody")
