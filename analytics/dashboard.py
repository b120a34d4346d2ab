"""The analytics dashboard page: selectors' figures turned into charts and tables for the template."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from routing.selectors_stats import chain_member_stats

from . import charts, selectors
from .models import RequestLog

OUTCOME_COLORS = {
    RequestLog.Outcome.OK: "#59a14f",
    RequestLog.Outcome.CLIENT_ERROR: "#edc948",
    RequestLog.Outcome.EXHAUSTED: "#e15759",
    RequestLog.Outcome.UPSTREAM_ERROR: "#9c2a2c",
    RequestLog.Outcome.INCOMPLETE: "#f28e2b",
    RequestLog.Outcome.CANCELLED: "#bab0ac",
    RequestLog.Outcome.CACHE_HIT: "#76b7b2",
}
# Legend names where the model's choice label reads oddly in a chart.
OUTCOME_NAMES = {RequestLog.Outcome.OK: "OK", RequestLog.Outcome.CLIENT_ERROR: "Client error",
                 RequestLog.Outcome.CACHE_HIT: "Cache hit"}
FAILURE_COLOR = "#e15759"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Period:
    key: str
    label: str
    span: timedelta
    hourly: bool  # requests chart in hours (else days)


PERIODS = {
    p.key: p
    for p in (
        Period("24h", "Last 24 hours", timedelta(hours=24), True),
        Period("7d", "Last 7 days", timedelta(days=7), True),
        Period("30d", "Last 30 days", timedelta(days=30), False),
    )
}
DEFAULT_PERIOD = "24h"
# Tokens are charted per day over at least this long, so a 24-hour view still shows a trend.
TOKENS_MIN_SPAN = timedelta(days=14)


def dashboard_context(user, period_key: str, *, now: datetime | None = None) -> dict:
    period = PERIODS.get(period_key) or PERIODS[DEFAULT_PERIOD]
    now = now or timezone.now()
    since = now - period.span
    qs = selectors.request_logs_visible_to(user)

    totals = selectors.totals(qs, since)
    served = selectors.served_per_provider(qs, since)
    trail = selectors.trail_stats(qs, since)
    latencies = selectors.latency_percentiles_per_provider(qs, since)
    tokens_since = now - max(period.span, TOKENS_MIN_SPAN)
    tokens = selectors.tokens_per_day_by_provider(qs, tokens_since)

    providers = sorted(
        set(served) | set(trail.provider_calls) | {p for day in tokens.values() for p in day}
        | {lat.provider for lat in latencies}
    )
    colors = charts.color_for(providers)
    sees_all = selectors.user_sees_all_requests(user)
    return {
        "period": period,
        "periods": list(PERIODS.values()),
        "scope": "every team member's requests" if sees_all else "your own requests",
        "totals": totals,
        "requests_chart": _requests_chart(qs, since, now, period),
        "share_chart": _share_chart(served, trail, colors),
        "error_chart": _error_chart(trail, served),
        "tokens_chart": _tokens_chart(tokens, tokens_since, now, colors),
        "tokens_days": (now - tokens_since).days,
        "latency_chart": _latency_chart(latencies, colors),
        "failing_routes": trail.top_failing_routes(10),
        "trail": trail,
        "health": selectors.routes_health() if sees_all else None,
        "route_stats": chain_member_stats() if sees_all else None,
        "budgets": _budgets(user, sees_all=sees_all),
    }


def _budgets(user, *, sees_all: bool):
    """Usage against each key's and user's limits, now; None when the quota store cannot be read."""
    from routing.selectors_budgets import budgets_visible_to

    try:
        return budgets_visible_to(user, sees_all=sees_all)
    except Exception as exc:  # the store may be down: the dashboard must still render
        log.warning("budget usage unavailable: %s", exc)
        return None


def _requests_chart(qs, since: datetime, now: datetime, period: Period):
    if period.hourly:
        counts = selectors.requests_per_hour_by_outcome(qs, since)
        buckets = selectors.hour_buckets(since, now)
        fmt = "%H:00" if period.span <= timedelta(days=1) else "%a %H:00"
        labels = [timezone.localtime(b).strftime(fmt) for b in buckets]
    else:
        counts = selectors.requests_per_day_by_outcome(qs, since)
        buckets = selectors.day_buckets(since, now)
        labels = [b.strftime("%b %d") for b in buckets]
    series = [
        charts.Series(OUTCOME_NAMES.get(outcome, str(outcome.label)), OUTCOME_COLORS[outcome],
                      [counts.get(b, {}).get(outcome, 0) for b in buckets])
        for outcome in RequestLog.Outcome
    ]
    unit = "hour" if period.hourly else "day"
    return charts.stacked_bars(labels, series, title=f"Requests per {unit} by outcome")


def _share_chart(served: dict[str, int], trail: selectors.TrailStats, colors: dict[str, str]):
    total = sum(served.values())
    providers = list(served) + sorted(set(trail.provider_calls) - set(served))
    bars = []
    for provider in providers:
        n = served.get(provider, 0)
        share = f"{n / total:.0%}" if total else "0%"
        bars.append(
            charts.Bar(provider, n, colors[provider], note=f"{charts.compact(n)} · {share}",
                       tooltip=f"{provider} served {n} requests ({share})")
        )
    return charts.horizontal_bars(bars, title="Requests served per provider")


def _error_chart(trail: selectors.TrailStats, served: dict[str, int]):
    providers = sorted(trail.provider_calls, key=lambda p: (-(trail.provider_error_rate(p) or 0), p))
    bars = []
    for provider in providers:
        rate = trail.provider_error_rate(provider) or 0.0
        calls, failed = trail.provider_calls[provider], trail.provider_failures.get(provider, 0)
        bars.append(
            charts.Bar(provider, rate, FAILURE_COLOR if rate else "#59a14f",
                       note=f"{rate:.1%} · {failed} of {calls} calls",
                       tooltip=f"{provider}: {failed} of {calls} upstream calls failed")
        )
    return charts.horizontal_bars(bars, title="Failed upstream calls per provider")


def _tokens_chart(tokens, since: datetime, now: datetime, colors: dict[str, str]):
    days = selectors.day_buckets(since, now)
    providers = sorted({p for day in tokens.values() for p in day})
    series = [charts.Series(p, colors[p], [tokens.get(d, {}).get(p, 0) for d in days]) for p in providers]
    return charts.stacked_bars([d.strftime("%b %d") for d in days], series, title="Tokens per day by provider")


def _latency_chart(latencies: list[selectors.Latency], colors: dict[str, str]):
    ranges = [
        charts.Range(lat.provider, lat.p50, lat.p95, colors[lat.provider], note=f"{lat.requests} requests")
        for lat in sorted(latencies, key=lambda lat: lat.p95)
    ]
    return charts.range_bars(ranges, title="Latency of successful requests per provider")
