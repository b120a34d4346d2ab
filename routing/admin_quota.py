"""Quota windows in the admin: usage vs limit per route and window, learned beside configured limits,
circuit-breaker state, and the "clear cooldown" action. Rows are snapshots (see services_quota)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from .models import QuotaWindow
from .quota import get_quota_store
from .quota.resilient import BACKEND_ERRORS, ResilientQuotaStore
from .services_quota import quota_cooldown_clear, quota_store_is_shared, quota_windows_rollup


@admin.register(QuotaWindow)
class QuotaWindowAdmin(admin.ModelAdmin):
    list_display = ["route", "window", "usage", "limit", "configured_limit", "learned_limit", "health",
                    "cooldown_until", "failures", "updated_at"]  # fmt: skip
    list_filter = ["health", "window", "provider"]
    search_fields = ["provider", "model", "key_label"]
    actions = ["clear_cooldown", "refresh_now"]
    list_per_page = 200

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="route", ordering="provider")
    def route(self, obj: QuotaWindow) -> str:
        return f"{obj.provider}/{obj.model}/{obj.key_label or '-'}"

    @admin.display(description="used")
    def usage(self, obj: QuotaWindow) -> str:
        if obj.usage_ratio is None:
            return str(obj.used)
        percent = min(100, round(obj.usage_ratio * 100))
        colour = "#ba2121" if percent >= 90 else "#c98a00" if percent >= 70 else "#417690"
        return format_html(
            '<span title="{} of {}" style="display:inline-block;width:80px;background:#eee;vertical-align:middle">'
            '<span style="display:block;width:{}%;height:8px;background:{}"></span></span> {} ({}%)',
            obj.used, obj.limit, percent, colour, obj.used, percent,
        )  # fmt: skip

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
