"""Reads for unified API keys."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

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
