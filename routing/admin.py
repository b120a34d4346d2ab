"""Team API keys in the admin.

Staff (permission ``routing.manage_all_api_keys``) see every key; members see and manage only their own.
A new key is shown once, in a message; only its SHA-256 hash is stored and the hash is never displayed.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path
from django.utils.html import format_html

from .admin_clients import connect_client_view
from .budgets import user_budget_of
from .models import ApiKey, Budget, UserBudget
from .services import api_key_create, api_key_revoke

MANAGE_ALL = "routing.manage_all_api_keys"
BUDGET_FIELDS = ["rpm", "rpd", "tpd", "allowed_models"]


def budget_summary(budget: Budget) -> str:
    """"2 rpm · 100 rpd · only fast, groq/*" — "no limit" when nothing is set."""
    parts = [f"{getattr(budget, w):,} {w}" for w in ("rpm", "rpd", "tpd") if getattr(budget, w) is not None]
    if budget.allowed_patterns:
        parts.append("only " + ", ".join(budget.allowed_patterns))
    return " · ".join(parts) or "no limit"


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "shown_prefix", "user", "state", "limits", "created_at", "last_used_at"]
    search_fields = ["name", "prefix", "user__username"]
    actions = ["revoke"]

    @staticmethod
    def _manages_all(request: HttpRequest) -> bool:
        return request.user.has_perm(MANAGE_ALL)

    def _owns(self, request: HttpRequest, obj: ApiKey | None) -> bool:
        return obj is None or self._manages_all(request) or obj.user_id == request.user.pk

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        queryset = super().get_queryset(request).select_related("user")
        if self._manages_all(request):
            return queryset
        return queryset.filter(user=request.user)

    def has_view_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return super().has_view_permission(request, obj) and self._owns(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._owns(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._owns(request, obj)

    def get_list_display(self, request: HttpRequest):
        if self._manages_all(request):
            return self.list_display
        return [name for name in self.list_display if name != "user"]

    def get_list_filter(self, request: HttpRequest):
        return [StateFilter, "user"] if self._manages_all(request) else [StateFilter]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        # Staff set budgets; members see their keys' (and their own user's) read-only.
        if obj is None:
            return ["user", "name", *BUDGET_FIELDS] if self._manages_all(request) else ["name"]
        return ["name", "user", "shown_prefix", "state", "created_at", "last_used_at", "revoked_at",
                *BUDGET_FIELDS, "user_budget"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        if obj is None:
            return []
        fixed = ["user", "shown_prefix", "state", "created_at", "last_used_at", "revoked_at", "user_budget"]
        return fixed if self._manages_all(request) else [*fixed, *BUDGET_FIELDS]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        owner = obj.user if self._manages_all(request) and obj.user_id else request.user
        created, raw = api_key_create(user=owner, name=obj.name, rpm=obj.rpm, rpd=obj.rpd, tpd=obj.tpd,
                                      allowed_models=obj.allowed_patterns)
        # The admin goes on with `obj` (history entry, redirect): make it the row just created.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        # The key in a box of its own that one click selects whole, so copying it takes no aiming.
        messages.warning(
            request,
            format_html(
                "New API key '{}' for {}: <code style=\"user-select:all;padding:.15em .4em;background:#fff;"
                'color:#000;font-size:1.05em">{}</code> — copy it now, it will not be shown again.',
                obj.name, owner.get_username(), raw,
            ),
        )  # fmt: skip

    @admin.display(description="limits")
    def limits(self, obj: ApiKey) -> str:
        return budget_summary(obj)

    @admin.display(description="the user's budget (applies too)")
    def user_budget(self, obj: ApiKey) -> str:
        budget = user_budget_of(obj.user)
        return budget_summary(budget) if budget is not None else "none"

    @admin.display(description="key")
    def shown_prefix(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="state", ordering="revoked_at")
    def state(self, obj: ApiKey) -> str:
        return "active" if obj.is_active else f"revoked {obj.revoked_at:%Y-%m-%d %H:%M}"

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_connect"
        return [path("connect/", self.admin_site.admin_view(self.connect_view), name=name), *super().get_urls()]

    def connect_view(self, request: HttpRequest):
        """*Connect a client*: ready configs for the tools, for one of the user's own keys."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        can_create = self.has_add_permission(request)
        if request.method == "POST" and not can_create:
            raise PermissionDenied
        response = connect_client_view(
            request, context={**self.admin_site.each_context(request), "opts": self.opts}, can_create_keys=can_create
        )
        new_key = response.context_data["new_key"]
        if new_key is not None:
            # In the key's history like a key added on its own page.
            self.log_addition(request, new_key, [{"added": {}}])
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key)
            count += 1
        self.message_user(request, f"{count} key(s) revoked; clients using them now get 401.")


@admin.register(UserBudget)
class UserBudgetAdmin(admin.ModelAdmin):
    """A team member's limits over all their keys. Staff set them; members see their own, read-only."""

    list_display = ["user", "rpm", "rpd", "tpd", "allowed"]
    search_fields = ["user__username"]
    fields = ["user", *BUDGET_FIELDS]

    def get_queryset(self, request: HttpRequest) -> QuerySet[UserBudget]:
        queryset = super().get_queryset(request).select_related("user")
        return queryset if request.user.has_perm(MANAGE_ALL) else queryset.filter(user=request.user)

    def has_view_permission(self, request: HttpRequest, obj: UserBudget | None = None) -> bool:
        own = obj is None or obj.user_id == request.user.pk or request.user.has_perm(MANAGE_ALL)
        return super().has_view_permission(request, obj) and own

    def get_readonly_fields(self, request: HttpRequest, obj: UserBudget | None = None):
        return ["user"] if obj is not None else []

    @admin.display(description="allowed chains and models")
    def allowed(self, obj: UserBudget) -> str:
        return ", ".join(obj.allowed_patterns) or "every one"


# Quota windows, and what routing adds to the provider admin; each kept in its own module.
from . import admin_providers, admin_quota  # noqa: E402, F401
