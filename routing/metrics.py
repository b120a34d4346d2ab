"""Prometheus metrics, one definition each; the API layer serves them at /metrics (routing.api.ops).

Counters and histograms are prometheus_client's multiprocess kind: every process (each daphne, the Celery
worker) writes its own file under PROMETHEUS_MULTIPROC_DIR (settings: var/metrics by default) and a scrape
adds them up, so several gateway processes give one set of numbers. Route state and headroom are read from
the quota store at scrape time (``route_families``), never kept as gauges.

Labels are bounded: endpoints, dialects, outcomes and statuses are small fixed sets; provider, model and key
label come from the routing config. No user text, no secret.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from routing.quota.base import HealthState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

requests_total = Counter(
    "freellm_requests_total", "Gateway requests that named a model, by how they ended",
    ["endpoint", "dialect", "outcome", "status"],
)
upstream_calls_total = Counter(
    "freellm_upstream_calls_total", "Calls made to upstream providers, by outcome (ok or the error kind)",
    ["provider", "model", "outcome"],
)
request_duration_seconds = Histogram(
    "freellm_request_duration_seconds", "Whole request, from arrival to the last byte (streams) or the answer",
    ["endpoint", "dialect"], buckets=_LATENCY_BUCKETS,
)
ttft_seconds = Histogram(
    "freellm_ttft_seconds", "Streams: from arrival to the first byte of the answer sent to the client",
    ["dialect"], buckets=_LATENCY_BUCKETS,
)
gateway_overhead_seconds = Histogram(
    "freellm_gateway_overhead_seconds",
    "Time the gateway added: the request's time up to its answer minus the time spent in upstream calls",
    ["endpoint"], buckets=_OVERHEAD_BUCKETS,
)
tokens_total = Counter(
    "freellm_tokens_total", "Tokens settled against upstream quotas (provider's count or the estimate)",
    ["provider", "kind"],
)
request_log_dropped_total = Counter(
    "freellm_request_log_dropped_total", "Request-log rows that could not be written and were dropped",
)

ROUTE_STATES = ("closed", "open", "half_open", "invalid", "disabled")


def route_state_of(health: str, *, key_invalid: bool) -> str:
    if key_invalid or health == HealthState.KEY_INVALID:
        return "invalid"
    return health if health in ROUTE_STATES else "closed"


async def route_families(cfg, store) -> list[GaugeMetricFamily]:
    """freellm_route_state (1 for the route's state, 0 for the others) and freellm_route_headroom (0..1 of
    its tightest window) for every (provider, model, key) in the routing config, read now."""
    state = GaugeMetricFamily("freellm_route_state", "Breaker state of each route (1 = current state)",
                              labels=["provider", "model", "key", "state"])
    headroom = GaugeMetricFamily("freellm_route_headroom", "Share of the tightest quota window left (0..1)",
                                 labels=["provider", "model", "key"])
    for model in cfg.models:
        for key in model.keys:
            route = model.route(key)
            status = await store.status(route)
            current = route_state_of(status.health, key_invalid=status.key_invalid)
            labels = [route.provider, route.model, route.key or "-"]
            for name in ROUTE_STATES:
                state.add_metric([*labels, name], 1.0 if name == current else 0.0)
            headroom.add_metric(labels, await store.headroom(route))
    return [state, headroom]
