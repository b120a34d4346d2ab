"""Writes for unified API keys (what clients send as `Authorization: Bearer fl-...`)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.utils import timezone

from .models import VISIBLE_PREFIX_LEN, ApiKey, Budget, UserBudget, hash_api_key, split_patterns


def api_key_create(
    *,
    user: AbstractBaseUser,
    name: str = "default",
    rpm: int | None = None,
    rpd: int | None = None,
    tpd: int | None = None,
    allowed_models: Iterable[str] = (),
) -> tuple[ApiKey, str]:
    """Create a key for ``user`` (with a budget of its own, if given); returns it with the raw key, which is
    shown once and never stored."""
    raw = ApiKey.new_raw_key()
    api_key = ApiKey.objects.create(
        user=user, name=name or "default", prefix=raw[:VISIBLE_PREFIX_LEN], key_hash=hash_api_key(raw),
        rpm=rpm, rpd=rpd, tpd=tpd, allowed_models=", ".join(allowed_models),
    )
    return api_key, raw


def budget_set(*, budget: Budget, rpm: int | None, rpd: int | None, tpd: int | None,
               allowed_models: Iterable[str]) -> list[str]:
    """Set a key's or a user budget's limits exactly (None: no limit). Returns the fields that changed; a
    change is saved (which refreshes the cached keys in every process)."""
    wanted = {"rpm": rpm, "rpd": rpd, "tpd": tpd, "allowed_models": ", ".join(allowed_models)}
    changed = [name for name, value in wanted.items() if getattr(budget, name) != value]
    if split_patterns(budget.allowed_models) == tuple(allowed_models) and "allowed_models" in changed:
        changed.remove("allowed_models")  # the same patterns, written differently
    for name in changed:
        setattr(budget, name, wanted[name])
    if changed:
        budget.save()
    return changed


def user_budget_set(*, user: AbstractBaseUser, rpm: int | None = None, rpd: int | None = None,
                    tpd: int | None = None, allowed_models: Iterable[str] = ()) -> list[str]:
    """``budget_set`` on the user's budget, created when it is missing and something is to be limited."""
    budget = UserBudget.objects.filter(user=user).first()
    if budget is None:
        if rpm is None and rpd is None and tpd is None and not tuple(allowed_models):
            return []
        budget = UserBudget(user=user)
    return budget_set(budget=budget, rpm=rpm, rpd=rpd, tpd=tpd, allowed_models=allowed_models)


# The key the admin's playground sends its requests with, one per user (routing/api/playground.py).
PLAYGROUND_KEY_NAME = "playground"


def api_key_playground_get_or_create(*, user: AbstractBaseUser) -> ApiKey:
    """The user's active playground key, created on first use. Its secret is never shown or needed: the
    playground authenticates by the admin session; the key makes its requests count as the user's (limits,
    request log) and tells them apart from the user's tools."""
    keys = ApiKey.objects.select_related("user").filter(user=user, name=PLAYGROUND_KEY_NAME, revoked_at__isnull=True)
    api_key = keys.order_by("pk").first()
    if api_key is None:
        created, _ = api_key_create(user=user, name=PLAYGROUND_KEY_NAME)
        # Read back with its user as a plain row (``user`` may be the request's lazy user object).
        api_key = keys.get(pk=created.pk)
    return api_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke for good; revoking twice keeps the first revocation time."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


# Team members are Django users: staff run the gateway, members only manage their own API keys.
STAFF_GROUP = "Staff"
MEMBERS_GROUP = "Members"
STAFF_APPS = ("providers", "routing", "analytics")
MEMBER_PERMISSIONS = ("routing.view_apikey", "routing.add_apikey", "routing.change_apikey", "routing.view_userbudget")


def team_groups_sync() -> dict[str, Group]:
    """Create the Staff and Members groups and grant what they need (idempotent, only ever adds).

    Staff get every permission of the gateway's apps, including models added later; members get the
    API-key permissions without ``manage_all_api_keys``, so the admin shows them their own keys only.
    """
    staff, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    staff.permissions.add(*Permission.objects.filter(content_type__app_label__in=STAFF_APPS))
    members, _ = Group.objects.get_or_create(name=MEMBERS_GROUP)
    member_permissions = Permission.objects.none()
    for dotted in MEMBER_PERMISSIONS:
        app_label, codename = dotted.split(".")
        member_permissions |= Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    members.permissions.add(*member_permissions)
    return {STAFF_GROUP: staff, MEMBERS_GROUP: members}


@dataclass(frozen=True)
class FirstAdmin:
    user: AbstractBaseUser
    password: str | None  # None when it came from FREELLM_ADMIN_PASSWORD
    raw_api_key: str


def first_admin_create(*, password: str | None) -> FirstAdmin | None:
    """On a database without a superuser: create ``admin`` and a first API key. None if one exists."""
    User = get_user_model()
    # An existing plain user called "admin" is left alone rather than promoted.
    if User.objects.filter(is_superuser=True).exists() or User.objects.filter(username="admin").exists():
        return None
    generated = None if password else secrets.token_urlsafe(12)
    user = User.objects.create_superuser(username="admin", email="", password=password or generated)
    _, raw = api_key_create(user=user, name="first key")
    return FirstAdmin(user=user, password=generated, raw_api_key=raw)
