"""Analytics admin: the request log (read-only), the dashboard and the live feed.

Who sees what: staff (``analytics.view_all_requests``, granted to the Staff group with every analytics
permission) see every request, the team-wide dashboard with route health, and the live feed. A member
given ``analytics.view_requestlog`` sees only their own requests, in the list and on the dashboard.

The request log grows without bound, so the list never counts the whole table: the paginator counts at
most ``CappedCountPaginator.cap`` rows, list filters take their choices from small tables or constants
(never SELECT DISTINCT over the log), and facets and the date hierarchy (both full-table queries) are off.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib import admin, messages
from django.contrib.admin import ShowFacets
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from providers.models import ModelKind, Provider

from . import (
    admin_sessions,  # noqa: F401  (registers the StickySession admin)
    dashboard,
    selectors,
)
from .models import Incident, RequestLog
from .services import request_log_stats

# The admin index gets a panel linking the dashboard and the live feed.
admin.site.index_template = "admin/analytics/index.html"


class CappedCountPaginator(Paginator):
    """Counts with ``SELECT COUNT(*) FROM (… LIMIT cap + 1)``: bounded work however large the log is.

    Past the cap the list shows "cap+" rows and the pages up to it; filters narrow the rest.
    """

    cap = 10_000

    @cached_property
    def _bounded_count(self) -> int:
        return self.object_list[: self.cap + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._bounded_count, self.cap)

    @property
    def capped(self) -> bool:
        return self._bounded_count > self.cap


class ProviderFilter(admin.SimpleListFilter):
    title = "provider"
    parameter_name = "provider"
    NONE = "-"

    def lookups(self, request, model_admin):
        providers = [(slug, slug) for slug in Provider.objects.order_by("slug").values_list("slug", flat=True)]
        return [*providers, (self.NONE, "(none: no route answered)")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(provider="" if value == self.NONE else value)


class EndpointFilter(admin.SimpleListFilter):
    title = "endpoint"
    parameter_name = "endpoint"

    def lookups(self, request, model_admin):
        return ModelKind.choices

    def queryset(self, request, queryset):
        return queryset.filter(endpoint=self.value()) if self.value() else queryset


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    # Eight columns, each pair that belongs together in one cell, so the figures on the right stay on screen.
    list_display = ["when", "user", "request", "route", "outcome_badge", "attempts", "tokens", "latency"]
    list_display_links = ["when"]
    list_select_related = ["user"]
    search_fields = ["requested_model", "model", "=session_id", "error"]
    paginator = CappedCountPaginator
    list_per_page = 100
    list_max_show_all = 200
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    actions = None
    fieldsets = [
        ("Request", {"fields": ["created", "user", "api_key", "endpoint", "dialect", "requested_model", "stream",
                                "session_id"]}),
        ("Result", {"fields": ["status_code", "outcome", "route", "attempts", "switched", "error"]}),
        ("Usage", {"fields": ["prompt_tokens", "completion_tokens", "latency", "first_token"]}),
        ("Trail", {"fields": ["trail_table"]}),
    ]
    readonly_fields = [
        "created",
        "user",
        "api_key",
        "endpoint",
        "dialect",
        "requested_model",
        "stream",
        "session_id",
        "status_code",
        "outcome",
        "route",
        "attempts",
        "switched",
        "error",
        "prompt_tokens",
        "completion_tokens",
        "latency",
        "first_token",
        "trail_table",
    ]

    # --- visibility ------------------------------------------------------------------------------------

    def get_queryset(self, request):
        return selectors.request_logs_visible_to(request.user).select_related("user", "api_key")

    def get_list_filter(self, request):
        filters = [
            "outcome",
            ProviderFilter,
            EndpointFilter,
            # The values seen (one DISTINCT over an indexed column), so a new dialect needs no edit here.
            ("dialect", admin.AllValuesFieldListFilter),
            ("created_at", admin.DateFieldListFilter),
            "stream",
        ]
        if selectors.user_sees_all_requests(request.user):
            filters.append("user")
        return filters

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # --- columns ---------------------------------------------------------------------------------------

    @admin.display(description="time", ordering="created_at")
    def when(self, obj: RequestLog):
        # To the second: requests a few seconds apart must not all read "4:25 p.m.". Today's rows show the
        # time only (the date is on hover), which leaves room for the figures on the right.
        local = timezone.localtime(obj.created_at)
        full = f"{local:%Y-%m-%d %H:%M:%S}"
        shown = f"{local:%H:%M:%S}" if local.date() == timezone.localdate() else full
        return format_html('<span style="white-space:nowrap" title="{}">{}</span>', full, shown)

    @admin.display(description="created at")
    def created(self, obj: RequestLog) -> str:
        return f"{timezone.localtime(obj.created_at):%Y-%m-%d %H:%M:%S}"

    @admin.display(description="route", ordering="provider")
    def route(self, obj: RequestLog) -> str:
        if not obj.provider:
            return "—"
        return f"{obj.provider}/{obj.model}" + (f" · {obj.key_label}" if obj.key_label else "")

    @admin.display(description="result", ordering="outcome")
    def outcome_badge(self, obj: RequestLog):
        color = dashboard.OUTCOME_COLORS.get(obj.outcome, "#888")
        return format_html(
            '<span style="display:inline-block;width:.7em;height:.7em;border-radius:50%;background:{};'
            'margin-right:.35em"></span>{}<br><small style="opacity:.75">HTTP {}</small>',
            color,
            obj.get_outcome_display(),
            obj.status_code,
        )

    @admin.display(description="request", ordering="requested_model")
    def request(self, obj: RequestLog):
        """The model asked for, and under it the endpoint (and whether it streamed)."""
        return format_html(
            '{}<br><small style="opacity:.75">{}</small>',
            obj.requested_model or "—",
            obj.endpoint + (" · stream" if obj.stream else ""),
        )

    @admin.display(description="tokens")
    def tokens(self, obj: RequestLog) -> str:
        return f"{obj.prompt_tokens} + {obj.completion_tokens}"

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: RequestLog) -> str:
        return f"{obj.latency_ms} ms"

    @admin.display(description="first token")
    def first_token(self, obj: RequestLog) -> str:
        return "—" if obj.first_token_ms is None else f"{obj.first_token_ms} ms"

    @admin.display(description="trail")
    def trail_table(self, obj: RequestLog):
        steps = obj.trail or []
        if not steps:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            (
                (i, step.get("route", ""), _step_outcome(step.get("outcome", "")), _step_ms(step))
                for i, step in enumerate(steps, 1)
            ),
        )
        return format_html(
            '<table class="freellm-trail"><thead><tr><th>#</th><th>route (provider/model/key)</th>'
            "<th>outcome</th><th>time</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # --- extra pages -----------------------------------------------------------------------------------

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name=f"{prefix}_dashboard"),
            path("live/", self.admin_site.admin_view(self.live_view), name=f"{prefix}_live"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        _warn_about_lost_rows(request)
        return super().changelist_view(request, extra_context)

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        _warn_about_lost_rows(request)
        context = {
            **self.admin_site.each_context(request),
            **dashboard.dashboard_context(request.user, request.GET.get("period", "")),
            "opts": self.opts,
            "title": "Analytics dashboard",
        }
        return TemplateResponse(request, "admin/analytics/dashboard.html", context)

    def live_view(self, request):
        if not selectors.user_sees_all_requests(request.user):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": "Live requests"}
        return TemplateResponse(request, "admin/analytics/live.html", context)


def _warn_about_lost_rows(request) -> None:
    """The request log is incomplete: say so above the list and the dashboard (staff only)."""
    if not selectors.user_sees_all_requests(request.user):
        return
    stats = request_log_stats()
    if stats.dropped:
        when = timezone.localtime(datetime.fromtimestamp(stats.last_drop_at or 0, UTC))
        messages.warning(request, f"{stats.dropped} request-log row(s) were lost since this gateway process "
                                  f"started (last at {when:%Y-%m-%d %H:%M:%S}): the database refused them or was "
                                  "unavailable for longer than the spool holds. The log shows fewer requests than were served.")
    if stats.spooled:
        messages.warning(request, f"{stats.spooled} request-log row(s) are waiting for the database, which is "
                                  "unavailable; they are written when it answers.")


def _step_outcome(outcome: str):
    if outcome == "ok":
        return mark_safe('<span style="color:#3d8b37;font-weight:600">ok</span>')
    if outcome.startswith("skipped"):
        return format_html('<span style="opacity:.7">skipped: {}</span>', outcome.partition(":")[2])
    return format_html('<span style="color:#c0392b;font-weight:600">{}</span>', outcome)


def _step_ms(step: dict) -> str:
    ms = step.get("ms")
    return f"{ms} ms" if ms else "—"


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """What the alert rules found (analytics/alerts.py): open ones are also the banner on every admin page."""

    list_display = ["summary", "rule", "state", "first_seen", "last_seen", "resolved_at", "notified"]
    list_filter = ["state", "rule"]
    search_fields = ["key", "summary"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="webhook told", boolean=True)
    def notified(self, obj: Incident) -> bool | None:
        if obj.notified_at is None:
            return None
        return obj.state == Incident.State.OPEN or obj.recovery_notified_at is not None
