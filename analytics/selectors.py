"""Reads over the request log for the admin: who may see which rows, and the dashboard's aggregates.

Every aggregate takes the caller's visible queryset (``request_logs_visible_to``) and a start time, so a
member's dashboard is built from their own requests only. Queries filter on ``created_at`` first (indexed,
alone and after provider/outcome/user) and group in the database; the trail (a JSON list) is read in
Python from a capped sample of the latest rows because SQLite and PostgreSQL spell JSON unnesting
differently.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, F, Q, QuerySet, Sum, Window
from django.db.models.functions import RowNumber, TruncDate, TruncHour
from django.utils import timezone

from .models import RequestLog

log = logging.getLogger(__name__)

VIEW_ALL_PERMISSION = "analytics.view_all_requests"
VIEW_PERMISSION = "analytics.view_requestlog"

# Rows whose trail is read for per-route statistics; beyond this the newest rows stand for the window.
TRAIL_SAMPLE = 20_000
# Outcomes that are the gateway's or an upstream's fault (client errors and disconnects are not).
FAILED_OUTCOMES = (
    RequestLog.Outcome.EXHAUSTED,
    RequestLog.Outcome.UPSTREAM_ERROR,
    RequestLog.Outcome.INCOMPLETE,
)


def user_sees_all_requests(user) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(VIEW_ALL_PERMISSION))


def request_logs_visible_to(user) -> QuerySet[RequestLog]:
    """Staff with ``view_all_requests`` see every row; members with ``view_requestlog`` their own only."""
    if user_sees_all_requests(user):
        return RequestLog.objects.all()
    if user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION):
        return RequestLog.objects.filter(user=user)
    return RequestLog.objects.none()


# --- time series -----------------------------------------------------------------------------------------


def hour_buckets(since: datetime, until: datetime) -> list[datetime]:
    start = since.replace(minute=0, second=0, microsecond=0)
    hours = int((until - start).total_seconds() // 3600) + 1
    return [start + timedelta(hours=i) for i in range(hours)]


def day_buckets(since: datetime, until: datetime) -> list[date]:
    # TruncDate groups by the day in the current time zone; so must the buckets.
    first, last = timezone.localtime(since).date(), timezone.localtime(until).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _requests_by_outcome(qs: QuerySet[RequestLog], since: datetime, trunc) -> dict:
    rows = (
        qs.filter(created_at__gte=since)
        .annotate(bucket=trunc("created_at"))
        .values("bucket", "outcome")
        .annotate(n=Count("id"))
        .order_by()
    )
    result: dict = defaultdict(Counter)
    for row in rows:
        result[row["bucket"]][row["outcome"]] += row["n"]
    return result


def requests_per_hour_by_outcome(qs: QuerySet[RequestLog], since: datetime) -> dict[datetime, Counter]:
    """hour → Counter(outcome → requests)."""
    return _requests_by_outcome(qs, since, TruncHour)


def requests_per_day_by_outcome(qs: QuerySet[RequestLog], since: datetime) -> dict[date, Counter]:
    """day → Counter(outcome → requests)."""
    return _requests_by_outcome(qs, since, TruncDate)


def tokens_per_day_by_provider(qs: QuerySet[RequestLog], since: datetime) -> dict[date, Counter]:
    """day → Counter(provider → prompt + completion tokens) of served requests."""
    rows = (
        qs.filter(created_at__gte=since)
        .exclude(provider="")
        .annotate(day=TruncDate("created_at"))
        .values("day", "provider")
        .annotate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")))
        .order_by()
    )
    result: dict[date, Counter] = defaultdict(Counter)
    for row in rows:
        result[row["day"]][row["provider"]] += row["tokens"] or 0
    return result


# --- per provider --------------------------------------------------------------------------------------


@dataclass
class Totals:
    requests: int = 0
    ok: int = 0
    failed: int = 0
    tokens: int = 0

    @property
    def success_rate(self) -> float | None:
        return self.ok / self.requests if self.requests else None


def totals(qs: QuerySet[RequestLog], since: datetime) -> Totals:
    row = qs.filter(created_at__gte=since).aggregate(
        requests=Count("id"),
        ok=Count("id", filter=Q(outcome=RequestLog.Outcome.OK)),
        failed=Count("id", filter=Q(outcome__in=FAILED_OUTCOMES)),
        tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
    )
    return Totals(row["requests"], row["ok"], row["failed"], row["tokens"] or 0)


def served_per_provider(qs: QuerySet[RequestLog], since: datetime) -> dict[str, int]:
    """provider → requests it served (the provider of the final, answering attempt), largest first."""
    rows = (
        qs.filter(created_at__gte=since)
        .exclude(provider="")
        .values("provider")
        .annotate(n=Count("id"))
        .order_by("-n", "provider")
    )
    return {row["provider"]: row["n"] for row in rows}


@dataclass(frozen=True)
class Latency:
    provider: str
    requests: int
    p50: int
    p95: int


def latency_percentiles_per_provider(qs: QuerySet[RequestLog], since: datetime) -> list[Latency]:
    """p50/p95 of the full response time of successful requests, per provider (nearest-rank, exact).

    Two queries whatever the number of providers: the row counts, then each row's rank within its provider
    (a window function, which SQLite and PostgreSQL both have) keeping only the ranks wanted, so no
    latency list is shipped to Python.
    """
    ok = qs.filter(created_at__gte=since, outcome=RequestLog.Outcome.OK).exclude(provider="")
    counts = {row["provider"]: row["n"] for row in ok.values("provider").annotate(n=Count("id")).order_by("provider")}
    wanted = {provider: (_nearest_rank(0.50, n) + 1, _nearest_rank(0.95, n) + 1) for provider, n in counts.items()}
    if not wanted:
        return []
    ranked = ok.annotate(
        rank=Window(RowNumber(), partition_by=[F("provider")], order_by=[F("latency_ms").asc(), F("id").asc()])
    )
    at_rank = {
        (provider, rank): latency
        for provider, rank, latency in ranked.filter(rank__in={r for ranks in wanted.values() for r in ranks})
        .values_list("provider", "rank", "latency_ms")
    }
    return [
        Latency(provider, counts[provider], p50=at_rank[(provider, r50)], p95=at_rank[(provider, r95)])
        for provider, (r50, r95) in wanted.items()
    ]


def _nearest_rank(p: float, n: int) -> int:
    return max(0, math.ceil(p * n) - 1)


# --- the trail -------------------------------------------------------------------------------------------


def split_route(route: str) -> tuple[str, str, str]:
    """"provider/model/key" (as routing.quota.base.Route prints it; model ids may contain "/")."""
    provider, _, rest = route.partition("/")
    model, _, key = rest.rpartition("/")
    return provider, model, key


@dataclass
class RouteFailures:
    route: str
    calls: int = 0
    failures: int = 0
    kinds: Counter = field(default_factory=Counter)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def top_kind(self) -> str:
        return self.kinds.most_common(1)[0][0] if self.kinds else ""


@dataclass
class TrailStats:
    rows: int  # requests read
    capped: bool  # the window had more rows than TRAIL_SAMPLE
    provider_calls: Counter
    provider_failures: Counter
    routes: dict[str, RouteFailures]

    def provider_error_rate(self, provider: str) -> float | None:
        calls = self.provider_calls.get(provider, 0)
        return self.provider_failures.get(provider, 0) / calls if calls else None

    def top_failing_routes(self, limit: int = 10) -> list[RouteFailures]:
        failing = [r for r in self.routes.values() if r.failures]
        failing.sort(key=lambda r: (-r.failures, -r.failure_rate, r.route))
        return failing[:limit]


def trail_stats(qs: QuerySet[RequestLog], since: datetime, *, sample: int = TRAIL_SAMPLE) -> TrailStats:
    """Calls and failures per provider and per route, from the trails of the newest ``sample`` requests.

    A trail step is ``{"route": "p/m/k", "outcome": "ok" | <error kind> | "skipped:<why>", "ms": n}``;
    skipped steps never reached the provider and are not counted as calls.
    """
    trails = list(
        qs.filter(created_at__gte=since).order_by("-created_at").values_list("trail", flat=True)[: sample + 1]
    )
    capped = len(trails) > sample
    trails = trails[:sample]
    provider_calls: Counter = Counter()
    provider_failures: Counter = Counter()
    routes: dict[str, RouteFailures] = {}
    for trail in trails:
        for step in trail or ():
            outcome = str(step.get("outcome", ""))
            route = str(step.get("route", ""))
            if not route or outcome.startswith("skipped"):
                continue
            provider = split_route(route)[0]
            stats = routes.setdefault(route, RouteFailures(route))
            stats.calls += 1
            provider_calls[provider] += 1
            if outcome != "ok":
                stats.failures += 1
                stats.kinds[outcome] += 1
                provider_failures[provider] += 1
    return TrailStats(len(trails), capped, provider_calls, provider_failures, routes)


# --- live route health (quota store) ----------------------------------------------------------------------


@dataclass(frozen=True)
class RouteHealth:
    route: str
    health: str
    failures: int
    cooldown_seconds: int | None
    exhausted_seconds: int | None
    exhausted_reason: str


@dataclass(frozen=True)
class HealthReport:
    available: bool
    routes_checked: int = 0
    unhealthy: tuple[RouteHealth, ...] = ()
    problem: str = ""


def routes_health() -> HealthReport:
    """Routes the quota store currently holds back (circuit open or half open, key invalid, a window the
    provider reported empty). Never raises: the dashboard shows ``problem`` instead."""
    try:
        from asgiref.sync import async_to_sync

        from routing.config import load_routing_config
        from routing.quota import get_quota_store
        from routing.quota.base import HealthState

        store = get_quota_store()
        config = load_routing_config()
        routes = [model.route(key) for model in config.models for key in model.keys]

        async def statuses():
            return [await store.status(route) for route in routes]

        results = async_to_sync(statuses)()
    except Exception as exc:  # the store may be down or not built yet; the dashboard must still render
        log.warning("route health unavailable: %s", exc)
        return HealthReport(False, problem=f"{type(exc).__name__}: {exc}"[:200])

    now = time.time()
    unhealthy = []
    for route, status in zip(routes, results, strict=True):
        if status.health == HealthState.CLOSED and not status.exhausted_until:
            continue
        unhealthy.append(
            RouteHealth(
                route=str(route),
                health=status.health,
                failures=status.failures,
                cooldown_seconds=_seconds_left(status.cooldown_until, now),
                exhausted_seconds=_seconds_left(status.exhausted_until, now),
                exhausted_reason=status.exhausted_reason,
            )
        )
    return HealthReport(True, len(routes), tuple(unhealthy))


def _seconds_left(until: float | None, now: float) -> int | None:
    return max(0, math.ceil(until - now)) if until else None


# --- for scripts and agents (the MCP tools) ---------------------------------------------------------------


def _usage_totals(rows: QuerySet[RequestLog]) -> dict[str, int]:
    totals = rows.aggregate(requests=Count("pk"), prompt_tokens=Sum("prompt_tokens"),
                            completion_tokens=Sum("completion_tokens"),
                            failed=Count("pk", filter=Q(outcome__in=FAILED_OUTCOMES)))  # fmt: skip
    totals = {name: value or 0 for name, value in totals.items()}
    totals["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    return totals


def usage_summary(*, api_key_id: int, per_user: bool, now: datetime | None = None) -> dict:
    """Requests and tokens today and this month (UTC, as the budgets count days) of one key; with ``per_user``
    also every user's, busiest first."""
    now = now or timezone.now()
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    rows = RequestLog.objects.filter(created_at__gte=month)
    key_rows = rows.filter(api_key_id=api_key_id)
    summary = {"since": {"today": day.isoformat(), "month": month.isoformat()},
               "key": {"today": _usage_totals(key_rows.filter(created_at__gte=day)), "month": _usage_totals(key_rows)}}  # fmt: skip
    if per_user:
        users = []
        for user_id, username in rows.order_by().values_list("user_id", "user__username").distinct():
            user_rows = rows.filter(user_id=user_id)
            users.append({"user": username, "today": _usage_totals(user_rows.filter(created_at__gte=day)),
                          "month": _usage_totals(user_rows)})
        users.sort(key=lambda u: (-u["month"]["requests"], u["user"] or ""))
        summary["users"] = users
    return summary


def request_log_of(*, request_id: str, user) -> RequestLog | None:
    """The row of one request by its X-FreeLLM-Request-Id, if ``user`` may see it (staff: any; others: their own)."""
    rows = RequestLog.objects.filter(request_id=request_id)
    if not user_sees_all_requests(user):
        rows = rows.filter(user=user)
    return rows.first()


def request_log_json(row: RequestLog) -> dict:
    """One request as scripts read it: what was asked, who answered, every route tried, tokens and timings."""
    return {
        "id": row.request_id,
        "created_at": row.created_at.isoformat(),
        "endpoint": row.endpoint,
        "dialect": row.dialect,
        "requested_model": row.requested_model,
        "provider": row.provider or None,
        "model": row.model or None,
        "key": row.key_label if row.provider else None,
        "stream": row.stream,
        "status": row.status_code,
        "outcome": row.outcome,
        "attempts": row.attempts,
        "trail": row.trail,
        "usage": {"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
                  "total_tokens": row.prompt_tokens + row.completion_tokens},
        "latency_ms": row.latency_ms,
        "first_token_ms": row.first_token_ms,
        "session_id": row.session_id or None,
        "switched": row.switched or None,
        "error": row.error or None,
    }
