"""Reads for unified API keys."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from providers.models import FallbackChain, ModelKind

from .models import API_KEY_PREFIX, ApiKey, hash_api_key

# last_used_at is for humans in the admin: minute precision spares the database a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


async def api_key_authenticate(raw: str | None) -> ApiKey | None:
    """The active key whose hash matches ``raw`` (with its user loaded), or None."""
    if not raw or not raw.startswith(API_KEY_PREFIX):
        return None
    api_key = (
        await ApiKey.objects.select_related("user", "user__budget")
        .filter(key_hash=hash_api_key(raw), revoked_at__isnull=True)
        .afirst()
    )
    # A deactivated team member's keys stop working with them.
    if api_key is None or not api_key.user.is_active:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional so that concurrent requests of the same minute write at most once.
        await ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION), pk=api_key.pk
        ).aupdate(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def api_keys_active_of(*, user) -> QuerySet[ApiKey]:
    """``user``'s own keys that still work, newest first (what they may point a client at)."""
    return ApiKey.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at")


def api_key_prefix_is_active(prefix: str) -> bool:
    """Whether some active key shows this visible prefix (it names a key without being one)."""
    return ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).exists()


def api_key_active_by_raw(raw: str) -> ApiKey | None:
    """The active key ``raw`` is (sync, for commands), or None; its owner must be active too."""
    if not raw.startswith(API_KEY_PREFIX):
        return None
    return ApiKey.objects.filter(key_hash=hash_api_key(raw), revoked_at__isnull=True, user__is_active=True).first()


def chat_chain_names() -> list[str]:
    """Names of the enabled chat chains: what a client may ask for as its model."""
    return list(FallbackChain.objects.filter(kind=ModelKind.CHAT, enabled=True).values_list("name", flat=True))


async def api_key_of_user(username: str) -> ApiKey | None:
    """The oldest active key of an active user (with the user loaded); a user without one gets an unsaved
    key standing for them alone (no id), so what it is used for is still theirs. None: no such active user."""
    from django.contrib.auth import get_user_model

    user = await get_user_model().objects.filter(username=username, is_active=True).afirst()
    if user is None:
        return None
    api_key = await ApiKey.objects.filter(user=user, revoked_at__isnull=True).order_by("created_at").afirst()
    if api_key is None:
        api_key = ApiKey(user=user, name="keyless", prefix="")
    api_key.user = user
    return api_key
