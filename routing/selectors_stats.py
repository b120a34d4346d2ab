"""Reads of the live route stats (routing/stats.py) for sync callers: the admin's model page, the dashboard and
the routing-state API. Each figure is RouteStats.summary(): samples, success probability, time to first token,
output tokens per second and the recent p50 of the time to first token; None for a route never seen."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.conf import settings

from .stats import RedisStatsBackend, RouteStats, RouteStatsStore, get_stats_store, key_key, model_key


def route_stats(names: Iterable[str]) -> dict[str, RouteStats]:
    """Stats of ``names`` (stats.model_key / stats.key_key values), decayed to now; missing ones never seen.

    With Redis, a store and client of its own, closed afterwards: the caller's event loop may be a throwaway
    one (async_to_sync), and the gateway's connections belong to the gateway's loop. In embedded mode the
    figures live in this process's store."""
    names = list(names)
    if not settings.REDIS_URL:
        return async_to_sync(get_stats_store().view)(names)

    async def shared() -> dict[str, RouteStats]:
        from .redis import redis_client_close

        try:
            return await RouteStatsStore(RedisStatsBackend(settings.REDIS_URL)).view(names)
        finally:
            await redis_client_close(settings.REDIS_URL)

    return async_to_sync(shared)()


def model_stats_summary(*, provider: str, model: str, keys: Iterable[str]) -> tuple[dict | None, dict[str, dict | None]]:
    """(the model's summary, each key label's summary) for one provider's model."""
    keys = list(keys)
    found = route_stats([model_key(provider, model), *(key_key(provider, model, k) for k in keys)])
    whole = found.get(model_key(provider, model))
    return (whole.summary() if whole else None,
            {k: (s.summary() if (s := found.get(key_key(provider, model, k))) else None) for k in keys})


@dataclass(frozen=True)
class MemberStats:
    route: str  # provider/model
    stats: dict | None  # RouteStats.summary(); None: never seen


@dataclass(frozen=True)
class ChainStats:
    name: str
    strategy: str
    members: tuple[MemberStats, ...]


def chain_member_stats() -> list[ChainStats]:
    """Every enabled chain's members with their live stats, in chain order."""
    from .config import load_routing_config

    cfg = load_routing_config()
    chains = sorted(cfg.chains.values(), key=lambda c: c.name)
    found = route_stats({model_key(m.provider.slug, m.model_id) for c in chains for m in c.models})
    return [
        ChainStats(chain.name, chain.strategy, tuple(
            MemberStats(m.name, s.summary() if (s := found.get(model_key(m.provider.slug, m.model_id))) else None)
            for m in chain.models))
        for chain in chains
    ]
