"""Every route (provider, model, key label) with its state now, for the routing-state API and the alerts.

Unlike the routing snapshot (routing.config), this includes what the router leaves out: disabled providers,
models and keys, and keys marked invalid, so that a script sees why a route is not used. No secrets are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from providers.models import Provider, ProviderKey

from .quota.base import HealthState, Limits, Route, RouteStatus
from .quota.learning import WINDOWS


class RouteState(StrEnum):
    """The states the API reports (the values of freellm_route_state's ``state`` label too)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    INVALID = "invalid"
    DISABLED = "disabled"


@dataclass(frozen=True)
class RouteRow:
    route: Route
    enabled: bool  # provider, model and key all enabled
    key_invalid: bool  # the key is marked invalid in the database (the router leaves it out)
    key_detail: str  # the key's last test or failure, in words


def all_routes() -> list[RouteRow]:
    """Every model of every provider with every key of it (a keyless provider without keys: its implicit one)."""
    rows = []
    for provider in Provider.objects.prefetch_related("keys", "models").order_by("slug"):
        keys = [(k.label, k.enabled, k.status == ProviderKey.Status.INVALID, k.status_detail)
                for k in provider.keys.all()] or ([("", True, False, "")] if provider.keyless else [])
        for model in provider.models.all():
            for label, key_enabled, invalid, detail in keys:
                route = Route(provider.slug, model.model_id, label,
                              Limits(rpm=model.rpm, rpd=model.rpd, tpm=model.tpm, tpd=model.tpd),
                              Limits(rpm=provider.account_rpm, rpd=provider.account_rpd),
                              provider.daily_reset_tz or "UTC")
                rows.append(RouteRow(route, provider.enabled and model.enabled and key_enabled, invalid, detail))
    return rows


def state_of(row: RouteRow, status: RouteStatus) -> RouteState:
    if not row.enabled:
        return RouteState.DISABLED
    if row.key_invalid or status.key_invalid or status.health == HealthState.KEY_INVALID:
        return RouteState.INVALID
    if status.health == HealthState.OPEN:
        return RouteState.OPEN
    if status.health == HealthState.HALF_OPEN:
        return RouteState.HALF_OPEN
    return RouteState.CLOSED


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


def _why(row: RouteRow, status: RouteStatus, state: RouteState, now: float) -> str:
    if state == RouteState.DISABLED:
        return "disabled in the admin"
    if state == RouteState.INVALID:
        return "the provider refused the key" + (f": {row.key_detail}" if row.key_detail else "")
    if status.exhausted_until and status.exhausted_until > now:
        return f"the provider reported its {status.exhausted_reason or 'quota'} window empty"
    if state == RouteState.HALF_OPEN:
        return "cooldown over: the next request is a single trial"
    if state == RouteState.OPEN:
        last = status.last_error
        return f"circuit open after {last.kind}" if last else "circuit open"
    return ""


def route_state_json(row: RouteRow, status: RouteStatus, *, now: float) -> dict[str, Any]:
    """One route as the API answers it."""
    route, state = row.route, state_of(row, status)
    windows: dict[str, Any] = {}
    for window in WINDOWS:
        windows[window] = {
            "used": int(status.used.get(window, 0)),
            "limit": status.limits.get(window),
            "configured": getattr(route.limits, window),
            "learned": status.learned.get(window),
        }
    for window in ("rpm", "rpd"):
        configured = getattr(route.provider_limits, window)
        if configured is not None:
            windows[f"provider_{window}"] = {"used": int(status.used.get(f"provider_{window}", 0)),
                                             "limit": configured, "configured": configured, "learned": None}
    until = max(filter(None, (status.cooldown_until, status.exhausted_until)), default=None)
    last = status.last_error
    return {
        "provider": route.provider,
        "model": route.model,
        "key": route.key,
        "state": state,
        "cooldown_until": _iso(until) if until and until > now else None,
        "why": _why(row, status, state, now),
        "failures": status.failures,
        "windows": windows,
        "learned_limits": dict(status.learned),
        "last_error": {"at": _iso(last.at), "kind": last.kind, "message": last.message} if last else None,
        "last_success_at": _iso(status.last_success_at),
    }
