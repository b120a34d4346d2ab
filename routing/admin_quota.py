"""Quota windows in the admin: usage vs limit per route and window, learned beside configured limits,
circuit-breaker state, and the "clear cooldown" action. Rows are snapshots (see services_quota)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from .models import QuotaWindow
from .quota import get_quota_store
from .quota.base import HealthState
from .quota.resilient import BACKEND_ERRORS, ResilientQuotaStore
from .services_quota import (
    PROVIDER_ROW_MODEL,
    quota_cooldown_clear,
    quota_store_is_shared,
    quota_windows_rollup,
)

HEALTH_LABELS = dict(QuotaWindow.HEALTH_CHOICES)
# On hover: what each state means for the next request.
HEALTH_MEANING = {
    HealthState.CLOSED: "Healthy: requests go through while the quota lasts.",
    HealthState.OPEN: "Failing or rate-limited: skipped until the cooldown ends (or an admin clears it).",
    HealthState.HALF_OPEN: "The cooldown is over: the next request is a single trial; success closes the circuit.",
    HealthState.KEY_INVALID: "The provider refused the key (401/403): every model of it is skipped until an admin "
                   "clears it or a health probe proves it works.",
}  # fmt: skip
HEALTH_COLORS = {
    HealthState.CLOSED: "#3d8b37",
    HealthState.OPEN: "#c0392b",
    HealthState.HALF_OPEN: "#c98a00",
    HealthState.KEY_INVALID: "#c0392b",
}


def _left(until: datetime | None, now: datetime) -> str:
    seconds = max(0, int((until - now).total_seconds()))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def health_badge(health: str, *, cooldown_until=None, failures: int = 0, exhausted_until=None, notes=()):
    """A coloured dot and the circuit state in words, with what is left of a cooldown or an empty window."""
    now = timezone.now()
    notes = list(notes)
    if cooldown_until and cooldown_until > now:
        notes.append(f"{_left(cooldown_until, now)} left")
    if exhausted_until and exhausted_until > now:
        notes.append(f"quota empty for {_left(exhausted_until, now)}")
    if failures:
        notes.append(f"{failures} failure{'s' if failures != 1 else ''} in a row")
    return format_html(
        '<span style="white-space:nowrap" title="{}"><span style="display:inline-block;width:.7em;height:.7em;'
        'border-radius:50%;background:{};margin-right:.35em"></span>{}</span>{}',
        HEALTH_MEANING.get(health, ""),
        HEALTH_COLORS.get(health, "#888"),
        HEALTH_LABELS.get(health, health),
        format_html('<br><small style="opacity:.8">{}</small>', " · ".join(notes)) if notes else "",
    )


class HealthFilter(admin.SimpleListFilter):
    title = "health"
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return list(HEALTH_LABELS.items())

    def queryset(self, request, queryset):
        return queryset.filter(health=self.value()) if self.value() else queryset


@admin.register(QuotaWindow)
class QuotaWindowAdmin(admin.ModelAdmin):
    # Few columns, so health and cooldowns fit on screen without scrolling sideways.
    list_display = ["route", "window", "usage", "limits", "health_state", "as_of"]
    list_filter = [HealthFilter, "window", "provider"]
    search_fields = ["provider", "model", "key_label"]
    actions = ["clear_cooldown", "refresh_now"]
    list_per_page = 200

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="route", ordering="provider")
    def route(self, obj: QuotaWindow) -> str:
        if obj.model == PROVIDER_ROW_MODEL:
            return f"{obj.provider} (every model and key)"
        return f"{obj.provider}/{obj.model}/{obj.key_label or '-'}"

    @admin.display(description="used")
    def usage(self, obj: QuotaWindow) -> str:
        if obj.usage_ratio is None:
            return f"{obj.used:,}"
        percent = min(100, round(obj.usage_ratio * 100))
        colour = "#ba2121" if percent >= 90 else "#c98a00" if percent >= 70 else "#417690"
        return format_html(
            '<span title="{}%" style="display:block;width:80px;background:#eee"><span style="display:block;'
            'width:{}%;height:8px;background:{}"></span></span><span style="white-space:nowrap">{} / {}</span>',
            percent, percent, colour, f"{obj.used:,}", f"{obj.limit:,}",
        )  # fmt: skip

    @admin.display(description="limit", ordering="limit")
    def limits(self, obj: QuotaWindow):
        """The effective limit, and where it comes from when the provider reported a different one."""
        def number(value: int | None) -> str:
            return "not set" if value is None else f"{value:,}"

        if obj.learned_limit is None:
            return "—" if obj.configured_limit is None else number(obj.configured_limit)
        return format_html(
            '{}<br><small style="opacity:.8">configured {} · learned {}</small>',
            number(obj.limit), number(obj.configured_limit), number(obj.learned_limit),
        )  # fmt: skip

    @admin.display(description="health", ordering="health")
    def health_state(self, obj: QuotaWindow):
        return health_badge(
            obj.health, cooldown_until=obj.cooldown_until, failures=obj.failures, exhausted_until=obj.exhausted_until
        )

    @admin.display(description="as of", ordering="updated_at")
    def as_of(self, obj: QuotaWindow) -> str:
        # A snapshot's time to the second: with Redis the worker rolls up every minute, and a stale time
        # says the worker is not running.
        return f"{timezone.localtime(obj.updated_at):%H:%M:%S}"

    def changelist_view(self, request: HttpRequest, extra_context=None):
        store = get_quota_store()
        if isinstance(store, ResilientQuotaStore) and store.degraded:
            since = timezone.localtime(datetime.fromtimestamp(store.degraded_since or 0, UTC))
            messages.warning(
                request,
                f"Redis is unavailable since {since:%Y-%m-%d %H:%M:%S} ({store.last_error}): each gateway process "
                "counts quota on its own until it returns. These rows are from before the outage.",
            )
        if not quota_store_is_shared():
            # Embedded mode: the live counters are in this very process; roll them up now.
            quota_windows_rollup(in_process=True)
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_refresh"
        return [path("refresh/", self.admin_site.admin_view(self.refresh_view), name=name), *super().get_urls()]

    def refresh_view(self, request: HttpRequest) -> HttpResponseRedirect:
        """The "Refresh now" button: the same as the action, but it also works on an empty list (an action
        needs rows to select, and before the first rollup there are none)."""
        if request.method != "POST" or not self.has_view_permission(request):
            raise PermissionDenied
        self.refresh_now(request, self.model.objects.none())
        query = request.GET.urlencode()
        return HttpResponseRedirect(reverse("admin:routing_quotawindow_changelist") + (f"?{query}" if query else ""))

    @admin.action(description="Clear cooldown (close the circuit, re-enable the key)", permissions=["change"])
    def clear_cooldown(self, request: HttpRequest, queryset) -> None:
        try:
            count = quota_cooldown_clear(windows=list(queryset))
        except BACKEND_ERRORS as exc:
            self.message_user(request, f"The quota store is unavailable ({type(exc).__name__}); try again.", messages.ERROR)
            return
        self.message_user(request, f"Cooldown cleared on {count} route(s).", messages.SUCCESS)

    @admin.action(description="Refresh now from the quota store", permissions=["view"])
    def refresh_now(self, request: HttpRequest, queryset) -> None:
        try:
            rows = quota_windows_rollup(in_process=True)
        except BACKEND_ERRORS as exc:
            self.message_user(request, f"The quota store is unavailable ({type(exc).__name__}); try again.", messages.ERROR)
            return
        self.message_user(request, f"{rows} quota window(s) refreshed.", messages.SUCCESS)
