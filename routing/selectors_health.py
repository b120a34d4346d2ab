"""Reads of the routes the router uses now (the routing snapshot) with their breaker state and headroom, for
the MCP tools: async, straight from the quota store, no database query and no secret (a key is its label)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .config import ChainInfo, ModelInfo, RoutingConfig
from .quota import get_quota_store
from .quota.base import HealthState


def models_named(cfg: RoutingConfig, name: str) -> tuple[ModelInfo, ...]:
    """The models behind a name /v1/models lists: a chain's members, a canonical id's providers, or one model."""
    chain: ChainInfo | None = cfg.chains.get(name)
    if chain is not None:
        return chain.models
    if name in cfg.by_canonical:
        return cfg.by_canonical[name]
    model = cfg.by_name.get(name)
    return (model,) if model is not None else ()


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


async def route_health_rows(models: Iterable[ModelInfo]) -> list[dict[str, Any]]:
    """Every (provider, model, key label) of ``models``: breaker state, cooldown, failures, headroom (0..1 of the
    tightest window left) and each window's used/limit."""
    store = get_quota_store()
    now = time.time()
    rows = []
    for model in models:
        for key in model.keys:
            route = model.route(key)
            status = await store.status(route)
            until = max(filter(None, (status.cooldown_until, status.exhausted_until)), default=None)
            cooling = until is not None and until > now
            rows.append({
                "route": model.name,
                "provider": route.provider,
                "model": route.model,
                "key": route.key,
                "state": HealthState.KEY_INVALID if status.key_invalid else status.health,
                "cooldown_until": _iso(until) if cooling else None,
                "cooldown_seconds": round(until - now, 1) if cooling else 0,
                "why": (f"the provider reported its {status.exhausted_reason or 'quota'} window empty"
                        if status.exhausted_until and status.exhausted_until > now else ""),
                "failures": status.failures,
                "headroom": round(await store.headroom(route), 3),
                "windows": {w: {"used": int(status.used.get(w, 0)), "limit": status.limits.get(w)}
                            for w in ("rpm", "rpd", "tpm", "tpd")},
            })  # fmt: skip
    return rows


def usable_now(row: dict[str, Any]) -> bool:
    """Whether the router would try this route now: circuit not open, key valid, some quota left."""
    return row["state"] in (HealthState.CLOSED, HealthState.HALF_OPEN) and not row["cooldown_seconds"] \
        and row["headroom"] > 0
