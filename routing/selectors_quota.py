"""Reads for the quota upkeep jobs and the quota admin."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Literal

from django.db.models import (
    Case,
    CharField,
    Count,
    DateTimeField,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
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


LiveWindows = Mapping[tuple[str, str, str, str], Mapping]  # what services_quota.quota_windows_current reads


def live_health_annotations(windows: LiveWindows, *, per: Literal["key", "provider"]) -> dict[str, Case | Value]:
    """The annotations of ``key_health_annotations`` / ``provider_health_annotations``, from live windows
    (embedded mode, where no worker writes the snapshot) instead of QuotaWindow rows: literal values per key
    or provider, so the page still costs one query and writes nothing."""
    groups: dict[tuple[str, ...], list[Mapping]] = defaultdict(list)
    for (provider, _model, key_label, window), values in windows.items():
        if window == QuotaWindow.Window.RPM:  # the rpm row stands for the route
            groups[(provider, key_label) if per == "key" else (provider,)].append(values)

    def match(group: tuple[str, ...]) -> Q:
        return Q(provider__slug=group[0], label=group[1]) if per == "key" else Q(slug=group[0])

    def case(by_group: dict[tuple[str, ...], object], field, default=None) -> Case | Value:
        whens = [When(match(g), then=Value(v, output_field=field)) for g, v in by_group.items() if v is not None]
        fallback = Value(default, output_field=field)
        return Case(*whens, default=fallback, output_field=field) if whens else fallback

    def rank(health: str) -> int:
        return _HEALTH_RANK.get(health, len(_HEALTH_RANK))

    return {
        "_health": case({g: min((r["health"] for r in rows), key=rank) for g, rows in groups.items()}, CharField()),
        "_unhealthy": case({g: sum(r["health"] != HealthState.CLOSED for r in rows) for g, rows in groups.items()},
                           IntegerField(), 0),  # fmt: skip
        "_cooldown_until": case(
            {g: max((r["cooldown_until"] for r in rows if r["cooldown_until"]), default=None) for g, rows in groups.items()},
            DateTimeField(),
        ),
    }


def quota_windows_by_key(*, provider: str, model: str, live: LiveWindows | None = None) -> dict[str, dict[str, QuotaWindow]]:
    """One model's windows: key label → window (rpm, rpd, tpm, tpd) → row. From the last snapshot, or from
    ``live`` windows (embedded mode) as rows that are never saved."""
    if live is None:
        rows = QuotaWindow.objects.filter(provider=provider, model=model).order_by("key_label", "window")
    else:
        rows = [QuotaWindow(provider=p, model=m, key_label=k, window=w, **values)
                for (p, m, k, w), values in sorted(live.items()) if (p, m) == (provider, model)]  # fmt: skip
    by_key: dict[str, dict[str, QuotaWindow]] = defaultdict(dict)
    for row in rows:
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
