"""Celery tasks: thin wrappers over routing/services_quota.py (scheduled in freellm/celery.py)."""

from __future__ import annotations

import random

from celery import shared_task
from django.conf import settings

from . import services_quota
from .selectors_quota import keys_needing_probe


@shared_task(name="routing.tasks.quota_windows_rollup")
def quota_windows_rollup() -> int:
    return services_quota.quota_windows_rollup()


@shared_task(name="routing.tasks.quota_cooldowns_expire")
def quota_cooldowns_expire() -> int:
    return services_quota.quota_cooldowns_expire()


@shared_task(name="routing.tasks.health_probe_sweep")
def health_probe_sweep() -> list[int]:
    """Queue one probe per key that needs one, spread over part of the interval so that a provider with
    many keys is not hit all at once."""
    key_ids = keys_needing_probe()
    spread = min(60.0, settings.FREELLM_PROBE_INTERVAL / 2)
    for key_id in key_ids:
        probe_key.apply_async(args=[key_id], countdown=random.uniform(0, spread))
    return key_ids


@shared_task(name="routing.tasks.probe_key")
def probe_key(key_id: int) -> str | None:
    result = services_quota.provider_key_probe(key_id=key_id)
    return None if result is None else result.detail


@shared_task(name="routing.tasks.stored_responses_prune")
def stored_responses_prune() -> int:
    from .stored_responses import stored_responses_prune as prune

    return prune()
