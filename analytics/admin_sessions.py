"""Admin for sticky sessions: which conversation is pinned to which model, and how often it switched.

Like the request log, staff with ``analytics.view_all_requests`` see every session; other members see the
sessions of their own API keys.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from .models import StickySession
from .selectors import user_sees_all_requests


class ActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active (within the sticky TTL)"), ("expired", "Expired")]

    def queryset(self, request, queryset):
        cutoff = timezone.now() - timedelta(seconds=settings.FREELLM_STICKY_TTL)
        if self.value() == "active":
            return queryset.filter(last_used__gte=cutoff)
        if self.value() == "expired":
            return queryset.filter(last_used__lt=cutoff)
        return queryset


@admin.register(StickySession)
class StickySessionAdmin(admin.ModelAdmin):
    # Seven columns, so "active" and the last use stay on screen; the start time is on the row's page.
    list_display = ["short_key", "source", "api_key", "route", "switched", "last_used", "active"]
    # One row per conversation, so the table grows: no facets, no date hierarchy, no DISTINCT-based filters.
    list_filter = [ActiveFilter, "source"]
    show_facets = admin.ShowFacets.NEVER
    search_fields = ["key", "provider", "model"]
    readonly_fields = [f.name for f in StickySession._meta.fields]
    list_select_related = ["api_key"]

    @admin.display(description="session", ordering="key")
    def short_key(self, obj: StickySession) -> str:
        return obj.key[:12] + "…"

    @admin.display(description="model", ordering="provider")
    def route(self, obj: StickySession) -> str:
        return f"{obj.provider}/{obj.model}"

    @admin.display(description="switches", ordering="switches")
    def switched(self, obj: StickySession):
        """How often the conversation moved to another model, and why it last did."""
        if not obj.switches:
            return "0"
        reason = obj.last_switch_reason
        short = Truncator(reason).chars(46)
        return format_html('{}<br><small title="{}" style="opacity:.8">last: {}</small>', obj.switches, reason, short)

    @admin.display(boolean=True)
    def active(self, obj: StickySession) -> bool:
        return obj.last_used >= timezone.now() - timedelta(seconds=settings.FREELLM_STICKY_TTL)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if user_sees_all_requests(request.user):
            return queryset
        return queryset.filter(api_key__user=request.user)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
