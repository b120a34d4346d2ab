"""Reads for the quota upkeep jobs and the quota admin."""

from __future__ import annotations

from collections import defaultdict

from providers.models import ProviderKey, UpstreamModel

from .models import QuotaWindow
from .quota.base import Limits, Route


def quota_routes() -> list[Route]:
    """Every route the gateway may use, including keys that failed auth (the admin shows those too)."""
    labels: dict[int, list[str]] = defaultdict(list)
    for provider_id, label in ProviderKey.objects.filter(enabled=True, provider__enabled=True).values_list(
        "provider_id", "label"
    ):
        labels[provider_id].append(label)
    routes = []
    for m in UpstreamModel.objects.filter(enabled=True, provider__enabled=True).select_related("provider"):
        p = m.provider
        keys = labels.get(p.id) or ([""] if p.keyless else [])
        for label in keys:
            routes.append(
                Route(
                    p.slug,
                    m.model_id,
                    label,
                    Limits(rpm=m.rpm, rpd=m.rpd, tpm=m.tpm, tpd=m.tpd),
                    Limits(rpm=p.account_rpm, rpd=p.account_rpd),
                    p.daily_reset_tz or "UTC",
                )
            )
    return routes


def keys_needing_probe() -> list[int]:
    """Keys never tested, rejected, or with a route the last rollup saw half-open or disabled."""
    keys = ProviderKey.objects.filter(enabled=True, provider__enabled=True)
    ids = set(
        keys.filter(status__in=[ProviderKey.Status.UNKNOWN, ProviderKey.Status.INVALID]).values_list("id", flat=True)
    )
    unhealthy = set(
        QuotaWindow.objects.filter(health__in=["half_open", "key_invalid"]).values_list("provider", "key_label")
    )
    if unhealthy:
        for key_id, slug, label in keys.values_list("id", "provider__slug", "label"):
            if (slug, label) in unhealthy:
                ids.add(key_id)
    return sorted(ids)
