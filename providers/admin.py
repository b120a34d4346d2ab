"""The control room: providers with their keys and models, and the fallback chains clients address.

Key secrets are write-only: the form field never renders the stored value, a blank field keeps it, and
pages show only the masked tail (``…abcd``). Change history records field names, never values.
"""

from __future__ import annotations

from adminsortable2.admin import CustomInlineFormSet, SortableAdminBase, SortableTabularInline
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from .models import ChainEntry, FallbackChain, ModelKind, Provider, ProviderKey, UpstreamModel
from .services import (
    KeyTestResult,
    embedding_family_conflict,
    provider_key_set_enabled,
    provider_key_test,
    provider_set_enabled,
    upstream_model_set_enabled,
)

admin.site.site_header = "freellm control room"
admin.site.site_title = "freellm"
admin.site.index_title = "Providers, keys, chains and team"


class ProviderKeyForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the current secret.",
    )

    class Meta:
        model = ProviderKey
        fields = ["provider", "label", "secret", "enabled"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The stored secret never enters the form, so no page (or error page) can echo it, and a blank
        # field does not count as a change in the history.
        self.initial["secret"] = ""

    @method_decorator(sensitive_variables())
    def clean_secret(self) -> str:
        typed = self.cleaned_data["secret"]
        if not typed and self.instance.pk:
            return self.instance.secret
        return typed


@admin.display(description="secret")
def masked_secret(obj: ProviderKey) -> str:
    return obj.masked_secret if obj.pk else "-"


def _report_key_tests(request: HttpRequest, keys) -> None:
    for key in keys:
        result: KeyTestResult = provider_key_test(key=key)
        level = {True: messages.SUCCESS, False: messages.ERROR, None: messages.WARNING}[result.ok]
        messages.add_message(request, level, f"{key}: {result.detail}")


class HidePostedSecretsMixin:
    """Error reports (mails to ADMINS, reporters using Django's filter) show no POST value of these forms:
    they carry key secrets. DEBUG pages show everything by design; never run DEBUG with real keys."""

    @method_decorator(sensitive_post_parameters())
    def changeform_view(self, request, *args, **kwargs):
        return super().changeform_view(request, *args, **kwargs)


class ProviderKeyInline(admin.TabularInline):
    model = ProviderKey
    form = ProviderKeyForm
    fields = ["label", "secret", masked_secret, "enabled", "status", "status_detail", "last_used_at"]
    readonly_fields = [masked_secret, "status", "status_detail", "last_used_at"]
    extra = 0


class UpstreamModelInline(admin.TabularInline):
    model = UpstreamModel
    fields = [
        "model_id", "kind", "family", "context_window", "supports_tools", "supports_vision", "supports_json",
        "rpm", "rpd", "tpm", "tpd", "enabled",
    ]
    extra = 0
    show_change_link = True


@admin.register(Provider)
class ProviderAdmin(HidePostedSecretsMixin, admin.ModelAdmin):
    list_display = ["slug", "name", "adapter", "base_url", "enabled", "key_count", "model_count"]
    list_filter = ["adapter", "enabled", "keyless"]
    search_fields = ["slug", "name", "base_url"]
    prepopulated_fields = {"slug": ["name"]}
    fieldsets = [
        (None, {"fields": ["name", "slug", "adapter", "base_url", "enabled", "keyless"]}),
        ("Request shaping", {"fields": ["headers", "drop_params"]}),
        ("Provider-wide limits", {"fields": ["account_rpm", "account_rpd", "daily_reset_tz"]}),
    ]
    inlines = [ProviderKeyInline, UpstreamModelInline]
    actions = ["enable", "disable", "test_keys"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).annotate(
            _keys=Count("keys", distinct=True), _models=Count("models", distinct=True)
        )

    def get_urls(self):
        from .admin_catalog import catalog_admin_urls

        return catalog_admin_urls(self) + super().get_urls()

    @admin.display(description="keys", ordering="_keys")
    def key_count(self, obj: Provider) -> int:
        return obj._keys

    @admin.display(description="models", ordering="_models")
    def model_count(self, obj: Provider) -> int:
        return obj._models

    @admin.action(description="Enable selected providers", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        count = provider_set_enabled(providers=queryset, enabled=True)
        self.message_user(request, f"{count} provider(s) enabled.")

    @admin.action(description="Disable selected providers", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        count = provider_set_enabled(providers=queryset, enabled=False)
        self.message_user(request, f"{count} provider(s) disabled.")

    @admin.action(description="Test every key of selected providers now", permissions=["change"])
    def test_keys(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        _report_key_tests(request, ProviderKey.objects.filter(provider__in=queryset).select_related("provider"))


@admin.register(ProviderKey)
class ProviderKeyAdmin(HidePostedSecretsMixin, admin.ModelAdmin):
    form = ProviderKeyForm
    list_display = ["__str__", masked_secret, "enabled", "status", "status_detail", "last_used_at"]
    list_filter = ["provider", "status", "enabled"]
    search_fields = ["label", "provider__slug"]
    list_select_related = ["provider"]
    fields = ["provider", "label", "secret", masked_secret, "enabled", "status", "status_detail", "last_used_at", "created_at"]
    readonly_fields = [masked_secret, "status", "status_detail", "last_used_at", "created_at"]
    actions = ["enable", "disable", "test_now"]

    @admin.action(description="Enable selected keys", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[ProviderKey]) -> None:
        count = provider_key_set_enabled(keys=queryset, enabled=True)
        self.message_user(request, f"{count} key(s) enabled.")

    @admin.action(description="Disable selected keys", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[ProviderKey]) -> None:
        count = provider_key_set_enabled(keys=queryset, enabled=False)
        self.message_user(request, f"{count} key(s) disabled.")

    @admin.action(description="Test selected keys now (one real, 1-token call each)", permissions=["change"])
    def test_now(self, request: HttpRequest, queryset: QuerySet[ProviderKey]) -> None:
        _report_key_tests(request, queryset.select_related("provider"))


@admin.register(UpstreamModel)
class UpstreamModelAdmin(admin.ModelAdmin):
    list_display = [
        "route_name", "kind", "family", "context_window", "supports_tools", "supports_vision", "supports_json",
        "rpm", "rpd", "tpm", "tpd", "enabled",
    ]
    list_filter = ["provider", "kind", "enabled", "supports_tools", "supports_vision", "supports_json", "family"]
    search_fields = ["model_id", "family", "provider__slug"]
    list_select_related = ["provider"]
    fieldsets = [
        (None, {"fields": ["provider", "model_id", "kind", "family", "dimensions", "context_window", "enabled"]}),
        ("Capabilities", {"fields": ["supports_tools", "supports_vision", "supports_json"]}),
        ("Limits per key (empty = unknown)", {"fields": ["rpm", "rpd", "tpm", "tpd"]}),
    ]
    actions = ["enable", "disable"]

    @admin.display(description="route", ordering="provider__slug")
    def route_name(self, obj: UpstreamModel) -> str:
        return obj.route_name

    @admin.action(description="Enable selected models", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[UpstreamModel]) -> None:
        count = upstream_model_set_enabled(models=queryset, enabled=True)
        self.message_user(request, f"{count} model(s) enabled.")

    @admin.action(description="Disable selected models", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[UpstreamModel]) -> None:
        count = upstream_model_set_enabled(models=queryset, enabled=False)
        self.message_user(request, f"{count} model(s) disabled.")


class ChainEntryFormSet(CustomInlineFormSet):
    def clean(self) -> None:
        super().clean()
        chain = self.instance
        chosen = [
            form.cleaned_data["model"]
            for form in self.forms
            if form.cleaned_data.get("model") and not form.cleaned_data.get("DELETE")
        ]
        problems = [
            f"{model.route_name} has kind {model.kind}; this chain has kind {chain.kind}"
            for model in chosen
            if model.kind != chain.kind
        ]
        if chain.kind == ModelKind.EMBEDDING:
            conflict = embedding_family_conflict((m.route_name, m.family) for m in chosen)
            if conflict:
                problems.append(conflict)
        if problems:
            raise ValidationError(problems)


class ChainEntryInline(SortableTabularInline):
    model = ChainEntry
    formset = ChainEntryFormSet
    fields = ["model"]
    autocomplete_fields = ["model"]
    extra = 0


@admin.register(FallbackChain)
class FallbackChainAdmin(SortableAdminBase, admin.ModelAdmin):
    list_display = ["name", "kind", "enabled", "route_list", "description"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "description"]
    inlines = [ChainEntryInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[FallbackChain]:
        return super().get_queryset(request).prefetch_related("entries__model__provider")

    @admin.display(description="models, in order")
    def route_list(self, obj: FallbackChain) -> str:
        return " → ".join(entry.model.route_name for entry in obj.entries.all())
