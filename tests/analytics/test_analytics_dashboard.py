"""Dashboard aggregates (on rows with known answers) and the rendered page with its SVG charts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from analytics import charts, selectors
from analytics.models import RequestLog
from tests.fixtures_analytics import make_log, sample_request_logs

DASHBOARD = "/admin/analytics/requestlog/dashboard/"
NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def at(hours_ago: float, **fields):
    return make_log(created_at=NOW - timedelta(hours=hours_ago), **fields)


def test_requests_per_hour_are_grouped_by_hour_and_outcome():
    at(0.1)  # 15:24
    at(0.2, outcome=RequestLog.Outcome.EXHAUSTED, status_code=429)  # 15:18
    at(1.0)  # 14:30
    at(1.4, outcome=RequestLog.Outcome.CLIENT_ERROR, status_code=400)  # 14:06
    at(30)  # outside the window

    counts = selectors.requests_per_hour_by_outcome(RequestLog.objects.all(), NOW - timedelta(hours=24))

    h15, h14 = NOW.replace(minute=0), NOW.replace(hour=14, minute=0)
    assert counts[h15] == {"ok": 1, "exhausted": 1}
    assert counts[h14] == {"ok": 1, "client_error": 1}
    assert sum(sum(c.values()) for c in counts.values()) == 4
    buckets = selectors.hour_buckets(NOW - timedelta(hours=24), NOW)
    assert len(buckets) == 25 and buckets[-1] == h15 and h14 in buckets


def test_requests_per_day_and_tokens_per_day_by_provider():
    at(1, provider="groq", prompt_tokens=100, completion_tokens=50)
    at(2, provider="groq", prompt_tokens=10, completion_tokens=5)
    at(3, provider="gemini", prompt_tokens=7, completion_tokens=3)
    at(26, provider="groq", prompt_tokens=1000, completion_tokens=0)  # the day before
    at(2, provider="", outcome=RequestLog.Outcome.EXHAUSTED, prompt_tokens=999)  # served by nobody

    tokens = selectors.tokens_per_day_by_provider(RequestLog.objects.all(), NOW - timedelta(days=7))

    today, yesterday = NOW.date(), NOW.date() - timedelta(days=1)
    assert tokens[today] == {"groq": 165, "gemini": 10}
    assert tokens[yesterday] == {"groq": 1000}
    days = selectors.requests_per_day_by_outcome(RequestLog.objects.all(), NOW - timedelta(days=7))
    assert days[today] == {"ok": 3, "exhausted": 1} and days[yesterday] == {"ok": 1}


def test_totals_and_served_share():
    at(1, provider="groq", prompt_tokens=10, completion_tokens=5)
    at(1, provider="groq")
    at(1, provider="gemini")
    at(1, provider="", outcome=RequestLog.Outcome.EXHAUSTED, status_code=429, prompt_tokens=0, completion_tokens=0)
    at(1, outcome=RequestLog.Outcome.CLIENT_ERROR, status_code=400, provider="", prompt_tokens=0, completion_tokens=0)

    since = NOW - timedelta(hours=24)
    totals = selectors.totals(RequestLog.objects.all(), since)
    assert (totals.requests, totals.ok, totals.failed) == (5, 3, 1)
    assert totals.tokens == 15 + 30 + 30
    assert selectors.served_per_provider(RequestLog.objects.all(), since) == {"groq": 2, "gemini": 1}


def test_latency_percentiles_are_nearest_rank_per_provider():
    for ms in range(1, 101):
        at(1, provider="groq", latency_ms=ms)
    for ms in (300, 100, 200):
        at(1, provider="gemini", latency_ms=ms)
    at(1, provider="gemini", latency_ms=99_999, outcome=RequestLog.Outcome.UPSTREAM_ERROR)  # failures don't count

    result = {lat.provider: lat for lat in selectors.latency_percentiles_per_provider(
        RequestLog.objects.all(), NOW - timedelta(hours=24))}

    assert (result["groq"].p50, result["groq"].p95, result["groq"].requests) == (50, 95, 100)
    assert (result["gemini"].p50, result["gemini"].p95, result["gemini"].requests) == (200, 300, 3)


def test_trail_stats_count_calls_and_failures_not_skips():
    at(1, trail=[
        {"route": "groq/llama/groq-0", "outcome": "skipped:rpm", "ms": 0},
        {"route": "openrouter/meta-llama/llama-3.3-70b:free/-", "outcome": "server_error", "ms": 90},
        {"route": "gemini/flash/g-0", "outcome": "ok", "ms": 300},
    ])
    at(1, trail=[
        {"route": "openrouter/meta-llama/llama-3.3-70b:free/-", "outcome": "timeout", "ms": 5000},
        {"route": "gemini/flash/g-0", "outcome": "rate_limited", "ms": 20},
        {"route": "groq/llama/groq-0", "outcome": "ok", "ms": 100},
    ])
    at(1, trail=[{"route": "openrouter/meta-llama/llama-3.3-70b:free/-", "outcome": "server_error", "ms": 80}])

    stats = selectors.trail_stats(RequestLog.objects.all(), NOW - timedelta(hours=24))

    assert stats.rows == 3 and not stats.capped
    assert stats.provider_calls == {"openrouter": 3, "gemini": 2, "groq": 1}
    assert stats.provider_failures == {"openrouter": 3, "gemini": 1}
    assert stats.provider_error_rate("gemini") == 0.5 and stats.provider_error_rate("groq") == 0.0
    top = stats.top_failing_routes()
    assert [r.route for r in top] == ["openrouter/meta-llama/llama-3.3-70b:free/-", "gemini/flash/g-0"]
    assert (top[0].failures, top[0].calls, top[0].top_kind) == (3, 3, "server_error")
    assert selectors.split_route(top[0].route) == ("openrouter", "meta-llama/llama-3.3-70b:free", "-")

    capped = selectors.trail_stats(RequestLog.objects.all(), NOW - timedelta(hours=24), sample=2)
    assert capped.rows == 2 and capped.capped


def test_member_dashboard_aggregates_only_their_own_requests(member_user, staff_user):
    at(1, user=member_user, provider="groq")
    at(1, user=staff_user, provider="gemini")
    at(1, user=staff_user, provider="gemini")
    since = NOW - timedelta(hours=24)

    mine = selectors.request_logs_visible_to(member_user)
    everyone = selectors.request_logs_visible_to(staff_user)

    assert selectors.served_per_provider(mine, since) == {"groq": 1}
    assert selectors.served_per_provider(everyone, since) == {"gemini": 2, "groq": 1}


def test_nice_ticks_and_compact_numbers():
    assert charts.nice_ticks(87) == [0, 25, 50, 75, 100]
    assert charts.nice_ticks(7) == [0, 2, 4, 6, 8]
    assert charts.nice_ticks(0) == [0.0, 1.0]
    assert charts.compact(1234) == "1.2k" and charts.compact(2_500_000) == "2.5M" and charts.compact(12) == "12"


def test_charts_escape_labels():
    svg = charts.stacked_bars(["<b>"], [charts.Series("<script>", "#000", [3])], title="t")
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_dashboard_renders_svg_charts_with_the_figures(client, staff_user):
    now = timezone.now()
    written = sample_request_logs(now=now, hours=30, per_hour=12, users=[staff_user])
    client.force_login(staff_user)

    response = client.get(DASHBOARD + "?period=24h")

    assert response.status_code == 200
    html = response.content.decode()
    svgs = re.findall(r"<svg\b[^>]*role=\"img\".*?</svg>", html, re.S)
    assert len(svgs) == 5
    assert all('role="img"' in svg for svg in svgs)
    requests_chart = svgs[0]
    # One bar segment per (hour, outcome) with traffic; their figures add up to the 24-hour total.
    figures = [int(n) for n in re.findall(r"<title>[^<]*· [^<:]+: (\d+)</title>", requests_chart)]
    in_window = RequestLog.objects.filter(created_at__gte=now - timedelta(hours=24)).count()
    assert 0 < in_window < written
    assert sum(figures) == in_window
    assert "Requests served per provider" in html and "groq served" in html
    assert "Top failing routes" in html and "<code>openrouter/" in html
    # Staff see route health (a fresh in-process store: nothing held back).
    assert "Route health now" in html


@pytest.mark.parametrize("period", ["7d", "30d", "bogus"])
def test_dashboard_periods_render(client, staff_user, period):
    at(1)
    client.force_login(staff_user)
    response = client.get(f"{DASHBOARD}?period={period}")
    assert response.status_code == 200
    assert response.content.decode().count("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox") == 5


def test_dashboard_shows_routes_the_quota_store_holds_back(client, staff_user):
    from providers.adapters.base import ErrorKind
    from providers.models import Provider, ProviderKey, UpstreamModel
    from routing.config import load_routing_config
    from routing.quota import set_quota_store
    from routing.quota.local import LocalQuotaStore

    provider = Provider.objects.create(slug="groq", name="Groq", base_url="http://127.0.0.1:9/v1")
    ProviderKey.objects.create(provider=provider, label="groq-main", secret="gsk_dashboard_test_secret")
    UpstreamModel.objects.create(provider=provider, model_id="llama-3.3-70b")
    UpstreamModel.objects.create(provider=provider, model_id="llama-3.1-8b")
    model = load_routing_config().by_name["groq/llama-3.3-70b"]
    store = LocalQuotaStore()
    store.record_now(model.route(model.keys[0]), ErrorKind.RATE_LIMITED, retry_after=90)
    set_quota_store(store)
    try:
        client.force_login(staff_user)
        html = client.get(DASHBOARD).content.decode()
    finally:
        set_quota_store(None)

    health = html.split("Route health now", 1)[1]
    assert "1 of 2 routes are held back" in health
    assert "<code>groq/llama-3.3-70b/groq-main</code>" in health and "open" in health
    assert re.search(r"(8\d|90) s", health)
    assert "gsk_dashboard_test_secret" not in html


def test_member_dashboard_has_no_route_health_or_live_link(client, member_user):
    at(1, user=member_user)
    client.force_login(member_user)
    html = client.get(DASHBOARD).content.decode()
    assert "your own requests" in html
    assert "Route health now" not in html and "requestlog/live/" not in html
