"""What routing contributes to the provider admin: each key's and provider's health beside its row, linked
to its quota windows; a model's quota by key; and "clear cooldown" on keys. Pages only read: health comes
from the last quota snapshot, or live from this process's quota store in embedded mode (no Redis).

providers/admin.py, at the ground layer, knows nothing of routing; this module extends its admins and
registers the extended ones in their place (same models, so every admin URL and page stays where it was).
"""

from __future__ import annotations

from typing import Literal

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from providers import admin as providers_admin
from providers.models import Provider, ProviderKey, UpstreamModel

from .admin_quota import health_badge
from .models import QuotaWindow
from .quota.resilient import BACKEND_ERRORS
from .selectors_quota import (
    key_health_annotations,
    live_health_annotations,
    provider_health_annotations,
    quota_windows_by_key,
)
from .services_quota import provider_keys_cooldown_clear, quota_store_is_shared, quota_windows_current


@admin.display(description="health")
def key_health(obj: ProviderKey):
    """The key's worst route state from the last quota snapshot, linked to its quota windows."""
    return _health_link(obj, "model", {"provider": obj.provider.slug, "key_label": obj.label} if obj.pk else {})


@admin.display(description="health")
def provider_health(obj: Provider):
    """The provider's worst route state from the last quota snapshot, linked to its quota windows."""
    return _health_link(obj, "route", {"provider": obj.slug})


def _health_link(obj, unit: str, query: dict[str, str]):
    health = getattr(obj, "_health", None)
    if not obj.pk or health is None:
        return "—"
    unhealthy = obj._unhealthy
    badge = health_badge(
        health,
        cooldown_until=obj._cooldown_until,
        notes=[f"on {unhealthy} {unit}{'s' if unhealthy != 1 else ''}"] if unhealthy else (),
    )
    url = reverse("admin:routing_quotawindow_changelist") + "?" + urlencode(query)
    return format_html('<a href="{}" title="Quota windows">{}</a>', url, badge)


def _after(columns: list, anchor, *added) -> list:
    """``columns`` with ``added`` inserted right after ``anchor``."""
    at = columns.index(anchor) + 1
    return [*columns[:at], *added, *columns[at:]]


def _health_annotations(per: Literal["key", "provider"]) -> dict:
    """Health from the last snapshot; in embedded mode, where the live state is in this process and no
    worker rolls it up, read live instead: a page view (a GET) writes nothing."""
    if not quota_store_is_shared():
        return live_health_annotations(quota_windows_current(), per=per)
    return key_health_annotations() if per == "key" else provider_health_annotations()


class ProviderKeyInline(providers_admin.ProviderKeyInline):
    fields = _after(providers_admin.ProviderKeyInline.fields, providers_admin.key_status, key_health)
    readonly_fields = _after(providers_admin.ProviderKeyInline.readonly_fields, providers_admin.key_status, key_health)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProviderKey]:
        return super().get_queryset(request).annotate(**_health_annotations("key"))


class ProviderAdmin(providers_admin.ProviderAdmin):
    # Health next to the name.
    list_display = _after(providers_admin.ProviderAdmin.list_display, "slug", provider_health)
    inlines = [ProviderKeyInline if inline is providers_admin.ProviderKeyInline else inline
               for inline in providers_admin.ProviderAdmin.inlines]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).annotate(**_health_annotations("provider"))


class ProviderKeyAdmin(providers_admin.ProviderKeyAdmin):
    list_display = _after(providers_admin.ProviderKeyAdmin.list_display, providers_admin.key_status, key_health)
    fields = _after(providers_admin.ProviderKeyAdmin.fields, "status_detail", key_health)
    readonly_fields = _after(providers_admin.ProviderKeyAdmin.readonly_fields, "status_detail", key_health)
    actions = [*providers_admin.ProviderKeyAdmin.actions, "clear_cooldown"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProviderKey]:
        return super().get_queryset(request).annotate(**_health_annotations("key"))

    @admin.action(description="Clear cooldown of selected keys (and re-enable keys marked invalid)",
                  permissions=["change"])  # fmt: skip
    def clear_cooldown(self, request: HttpRequest, queryset: QuerySet[ProviderKey]) -> None:
        try:
            count = provider_keys_cooldown_clear(keys=list(queryset.select_related("provider")))
        except BACKEND_ERRORS as exc:
            self.message_user(request, f"The quota store is unavailable ({type(exc).__name__}); try again.",
                              messages.ERROR)  # fmt: skip
            return
        self.message_user(request, f"Cooldown cleared on {count} route(s); keys marked invalid are tried again.",
                          messages.SUCCESS)  # fmt: skip


class UpstreamModelAdmin(providers_admin.UpstreamModelAdmin):
    fieldsets = [
        *providers_admin.UpstreamModelAdmin.fieldsets,
        ("Quota now", {
            "fields": ["quota_now"],
            "description": "Each key's use of this model against the effective limit (the lower of the one "
                           "configured above and one the provider reported), from the last quota snapshot.",
        }),
    ]  # fmt: skip
    readonly_fields = ["quota_now"]

    @admin.display(description="by key")
    def quota_now(self, obj: UpstreamModel):
        live = None if quota_store_is_shared() else quota_windows_current()
        rows = quota_windows_by_key(provider=obj.provider.slug, model=obj.model_id, live=live) if obj.pk else {}
        if not rows:
            return "No snapshot yet (see Quota windows: 'Refresh now')."

        def cell(row: QuotaWindow | None):
            if row is None:
                return "—"
            used = f"{row.used:,} / {row.limit:,}" if row.limit is not None else f"{row.used:,}"
            if row.learned_limit is None:
                return used
            return format_html('{}<br><small style="opacity:.8">learned {}</small>', used, f"{row.learned_limit:,}")

        def health(by_window: dict[str, QuotaWindow]):
            # Every window row of a route carries the route's health.
            row = next(iter(by_window.values()))
            return health_badge(row.health, cooldown_until=row.cooldown_until, exhausted_until=row.exhausted_until)

        windows = ("rpm", "rpd", "tpm", "tpd")
        body = format_html_join(
            "",
            "<tr><td>{}</td>" + "<td>{}</td>" * len(windows) + "<td>{}</td></tr>",
            (
                (label or "(keyless)", *(cell(by_window.get(w)) for w in windows), health(by_window))
                for label, by_window in rows.items()
            ),
        )
        url = reverse("admin:routing_quotawindow_changelist") + "?" + urlencode(
            {"provider": obj.provider.slug, "model": obj.model_id}
        )
        return format_html(
            "<table><thead><tr><th>key</th><th>RPM</th><th>RPD</th><th>TPM</th><th>TPD</th><th>health</th></tr>"
            '</thead><tbody>{}</tbody></table><p><a href="{}">Quota windows of this model →</a></p>',
            body, url,
        )  # fmt: skip


for _model, _admin in ((Provider, ProviderAdmin), (ProviderKey, ProviderKeyAdmin), (UpstreamModel, UpstreamModelAdmin)):
    admin.site.unregister(_model)
    admin.site.register(_model, _admin)
