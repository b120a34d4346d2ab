"""Reads for the quota upkeep jobs and the quota admin."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Case, Count, Max, OuterRef, Subquery, Value, When
from django.db.models.functions import Coalesce

from providers.models import ProviderKey

from .config import KeyInfo, model_infos
from .models import QuotaWindow
from .quota.base import HealthState, Route


def quota_routes() -> list[Route]:
    """Every route the gateway may use, including keys that failed auth (the admin shows those too)."""
    keys: dict[int, list[KeyInfo]] = defaultdict(list)
    # No secrets: a route is named by the key's label.
    for key_id, provider_id, label in ProviderKey.objects.filter(enabled=True, provider__enabled=True).values_list(
        "id", "provider_id", "label"
    ):
        keys[provider_id].append(KeyInfo(key_id, label, ""))
    return [model.route(key) for model in model_infos(keys) for key in model.keys]


# Worst first: the state a key's badge shows when its models differ.
_HEALTH_RANK = {HealthState.KEY_INVALID: 0, HealthState.OPEN: 1, HealthState.HALF_OPEN: 2, HealthState.CLOSED: 3}


def key_health_annotations() -> dict[str, Subquery]:
    """Annotations for a ProviderKey queryset, from the last QuotaWindow snapshot (one row per route and
    window; the rpm row stands for the route): ``_health`` (worst state over the key's models, None when
    there is no snapshot yet), ``_unhealthy`` (models not closed) and ``_cooldown_until`` (the latest)."""
    return _health_annotations(
        QuotaWindow.objects.filter(provider=OuterRef("provider__slug"), key_label=OuterRef("label"))
    )


def provider_health_annotations() -> dict[str, Subquery]:
    """The same for a Provider queryset, over all its routes (``_unhealthy`` counts routes)."""
    return _health_annotations(QuotaWindow.objects.filter(provider=OuterRef("slug")))


def _health_annotations(rows) -> dict[str, Subquery]:
    routes = rows.filter(window=QuotaWindow.Window.RPM)
    rank = Case(*(When(health=h, then=Value(r)) for h, r in _HEALTH_RANK.items()), default=Value(len(_HEALTH_RANK)))

    def aggregate(expression, queryset=routes):
        return Subquery(queryset.order_by().values("provider").annotate(v=expression).values("v")[:1])

    return {
        "_health": Subquery(routes.annotate(rank=rank).order_by("rank").values("health")[:1]),
        "_unhealthy": Coalesce(aggregate(Count("pk"), routes.exclude(health=HealthState.CLOSED)), 0),
        "_cooldown_until": aggregate(Max("cooldown_until")),
    }


def quota_windows_by_key(*, provider: str, model: str) -> dict[str, dict[str, QuotaWindow]]:
    """The last snapshot of one model: key label → window (rpm, rpd, tpm, tpd) → row."""
    by_key: dict[str, dict[str, QuotaWindow]] = defaultdict(dict)
    for row in QuotaWindow.objects.filter(provider=provider, model=model).order_by("key_label", "window"):
        by_key[row.key_label][row.window] = row
    return dict(by_key)


def keys_marked_invalid() -> set[tuple[str, str]]:
    """(provider slug, key label) of the keys the router leaves out after an auth failure."""
    return set(
        ProviderKey.objects.filter(status=ProviderKey.Status.INVALID).values_list("provider__slug", "label")
    )


def keys_needing_probe() -> list[int]:
    """Keys never tested, rejected, or with a route the last rollup saw half-open or disabled."""
    keys = ProviderKey.objects.filter(enabled=True, provider__enabled=True)
    ids = set(
        keys.filter(status__in=[ProviderKey.Status.UNKNOWN, ProviderKey.Status.INVALID]).values_list("id", flat=True)
    )
    unhealthy = set(
        QuotaWindow.objects.filter(health__in=[HealthState.HALF_OPEN, HealthState.KEY_INVALID]).values_list("provider", "key_label")
    )
    if unhealthy:
        for key_id, slug, label in keys.values_list("id", "provider__slug", "label"):
            if (slug, label) in unhealthy:
                ids.add(key_id)
    return sorted(ids)
