"""The control room: providers with their keys and models, and the fallback chains clients address.

Routing adds what it knows of these rows (health columns, quota per key, "clear cooldown") by extending the
admins below in routing/admin_providers.py: this module, at the ground layer, imports no other app.

Key secrets are write-only: the form field never renders the stored value, a blank field keeps it, and
pages show only the masked tail (``…abcd``). Change history records field names, never values.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml
from adminsortable2.admin import (
    CustomInlineFormSet,
    SortableAdminBase,
    SortableAdminMixin,
    SortableTabularInline,
)
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Count, QuerySet
from django.db.models.signals import post_save
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.text import Truncator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from .config_schema import fusion_problems, proxy_url_problem
from .models import ChainEntry, FallbackChain, ModelAlias, ModelKind, Provider, ProviderKey, UpstreamModel
from .netguard import upstream_url_validator
from .services import (
    KeyTestResult,
    config_export,
    embedding_family_conflict,
    provider_key_set_enabled,
    provider_key_test,
    provider_set_enabled,
    upstream_model_set_enabled,
)

admin.site.site_header = "freellm control room"
admin.site.site_title = "freellm"
admin.site.index_title = "Providers, keys, chains and team"


class WriteOnlyProxyMixin:
    """The ``proxy`` URL may carry a user and password, so the form never renders it (like a secret):
    blank keeps the stored one, ``-`` removes it. The page shows it with the credentials masked."""

    def _init_proxy(self) -> None:
        self.fields["proxy"] = forms.CharField(
            required=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "style": "width: 24em"}),
            help_text="Write-only. http://, https:// or socks5://[user:pass@]host:port; blank keeps the "
            f"current one ({mask_proxy(self.instance.proxy) if self.instance.pk else 'none'}), - removes it.",
        )
        self.initial["proxy"] = ""

    @method_decorator(sensitive_variables())
    def clean_proxy(self) -> str:
        typed = self.cleaned_data["proxy"].strip()
        if typed == "-":
            return ""
        if not typed:
            return self.instance.proxy if self.instance.pk else ""
        if problem := proxy_url_problem(typed):
            raise forms.ValidationError(f"The proxy URL {problem}.")
        return typed


def mask_proxy(proxy: str) -> str:
    """A proxy URL fit for a page: any user and password replaced by ***."""
    if not proxy:
        return "none"
    parts = urlsplit(proxy)
    if not (parts.username or parts.password):
        return proxy
    host = parts.hostname or ""
    return f"{parts.scheme}://***@{host}" + (f":{parts.port}" if parts.port else "")


class ProviderKeyForm(WriteOnlyProxyMixin, forms.ModelForm):
    secret = forms.CharField(
        # The label names the field in the change history ("Changed secret."): keep it plain.
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password", "style": "width: 12em"}),
        help_text="Write-only: type a new secret to replace the current one, or leave blank to keep it.",
    )

    class Meta:
        model = ProviderKey
        fields = ["provider", "label", "secret", "proxy", "enabled"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "proxy" in self.fields:  # the key page has it; the provider page's key rows do not
            self._init_proxy()
        # The stored secret never enters the form, so no page (or error page) can echo it, and a blank
        # field does not count as a change in the history.
        self.initial["secret"] = ""

    @method_decorator(sensitive_variables())
    def clean_secret(self) -> str:
        typed = self.cleaned_data["secret"]
        if not typed and self.instance.pk:
            return self.instance.secret
        return typed


class ProviderForm(WriteOnlyProxyMixin, forms.ModelForm):
    class Meta:
        model = Provider
        fields = ["proxy"]  # the admin adds the fieldsets' fields

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "proxy" in self.fields:
            self._init_proxy()


@admin.display(description="current secret")
def masked_secret(obj: ProviderKey) -> str:
    return obj.masked_secret if obj.pk else "-"


STATUS_COLORS = {
    ProviderKey.Status.ACTIVE: "#3d8b37",
    ProviderKey.Status.INVALID: "#c0392b",
    ProviderKey.Status.UNKNOWN: "#888",
}


@admin.display(description="status", ordering="status")
def key_status(obj: ProviderKey):
    """The last test's verdict, with its detail shortened (whole on hover) so rows stay one line high."""
    if not obj.pk:
        return "—"
    detail = obj.status_detail
    short = Truncator(detail).chars(46)
    return format_html(
        '<span style="color:{};font-weight:600">{}</span>{}',
        STATUS_COLORS.get(obj.status, "#888"),
        obj.get_status_display(),
        format_html('<br><small title="{}" style="opacity:.8">{}</small>', detail, short) if detail else "",
    )


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
    fields = ["label", "secret", masked_secret, "enabled", key_status, "last_used_at"]
    readonly_fields = [masked_secret, key_status, "last_used_at"]
    extra = 0

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and db_field.name == "label":
            field.widget.attrs["style"] = "width: 12em"
        return field

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProviderKey]:
        return super().get_queryset(request).select_related("provider")


class UpstreamModelInline(admin.TabularInline):
    model = UpstreamModel
    fields = [
        "model_id", "kind", "family", "context_window", "supports_tools", "supports_vision", "supports_json",
        "rpm", "rpd", "tpm", "tpd", "enabled",
    ]
    extra = 0
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[UpstreamModel]:
        return super().get_queryset(request).select_related("provider")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        # Twelve columns: narrow inputs keep the row inside the page instead of scrolling sideways.
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is None:
            return field
        widths = {"model_id": "13em", "family": "7em", "kind": "7em"}
        if db_field.name in widths:
            field.widget.attrs["style"] = f"width: {widths[db_field.name]}"
        elif isinstance(db_field, models.PositiveIntegerField):
            field.widget.attrs["style"] = "width: 6em"
        field.label = self.short_labels.get(db_field.name, field.label)
        return field

    short_labels = {
        "context_window": "context", "supports_tools": "tools", "supports_vision": "vision",
        "supports_json": "JSON mode", "rpm": "RPM", "rpd": "RPD", "tpm": "TPM", "tpd": "TPD",
    }  # fmt: skip


@admin.register(Provider)
class ProviderAdmin(HidePostedSecretsMixin, admin.ModelAdmin):
    form = ProviderForm
    # The long base URL last, where running off the screen costs least.
    list_display = ["slug", "name", "adapter", "enabled", "key_count", "model_count", "base_url"]
    list_filter = ["adapter", "enabled", "keyless"]
    search_fields = ["slug", "name", "base_url"]
    prepopulated_fields = {"slug": ["name"]}
    fieldsets = [
        (None, {"fields": ["name", "slug", "adapter", "base_url", "enabled", "keyless"]}),
        ("Request shaping", {"fields": ["headers", "drop_params", "proxy"]}),
        ("Provider-wide limits", {"fields": ["account_rpm", "account_rpd", "daily_reset_tz"]}),
    ]
    inlines = [ProviderKeyInline, UpstreamModelInline]
    actions = ["enable", "disable", "test_keys"]
    # Only http(s), and no internal address (SSRF: the gateway sends the provider's key there).
    formfield_overrides = {models.URLField: {"assume_scheme": "https", "validators": [upstream_url_validator]}}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).annotate(
            _keys=Count("keys", distinct=True), _models=Count("models", distinct=True)
        )

    def get_urls(self):
        from .admin_catalog import catalog_admin_urls
        from .admin_discovery import discovery_admin_urls

        test_keys = path(
            "<path:object_id>/test-keys/",
            self.admin_site.admin_view(self.test_keys_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_test_keys",
        )
        export = path(
            "export.yaml",
            self.admin_site.admin_view(self.export_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_export",
        )
        return [*catalog_admin_urls(self), *discovery_admin_urls(self), test_keys, export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The whole config as import_config's YAML, secrets left out (like ``manage.py export_config``):
        what the admin built can go into freellm.yaml, and importing it keeps the stored secrets."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        text = yaml.safe_dump(config_export(with_secrets=False), sort_keys=False, allow_unicode=True)
        response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="freellm.yaml"'
        return response

    def test_keys_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """The "Test keys now" button of the change page: test every key of this provider, report each."""
        if request.method != "POST":
            raise PermissionDenied  # a real upstream call and a status change: never on a GET
        provider = self.get_object(request, object_id)
        if provider is None or not self.has_change_permission(request, provider):
            raise PermissionDenied
        keys = list(provider.keys.select_related("provider"))
        if not keys:
            self.message_user(request, "This provider has no keys to test.", messages.WARNING)
        _report_key_tests(request, keys)
        return HttpResponseRedirect(reverse("admin:providers_provider_change", args=[provider.pk]))

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
    list_display = ["__str__", masked_secret, "enabled", key_status, "last_used_at"]
    list_filter = ["provider", "status", "enabled"]
    search_fields = ["label", "provider__slug"]
    list_select_related = ["provider"]
    fields = ["provider", "label", "secret", masked_secret, "proxy", "enabled", "status", "status_detail", "last_used_at",
              "created_at"]  # fmt: skip
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
    list_filter = [
        "provider", "kind", "enabled", "supports_tools", "supports_vision", "supports_json", "supports_fim", "family",
    ]
    search_fields = ["model_id", "canonical", "family", "provider__slug"]
    list_select_related = ["provider"]
    fieldsets = [
        (None, {"fields": ["provider", "model_id", "canonical", "kind", "family", "dimensions", "context_window",
                           "enabled"]}),
        ("Capabilities", {"fields": ["supports_tools", "supports_vision", "supports_json", "supports_fim"]}),
        ("Limits per key (empty = unknown)", {"fields": ["rpm", "rpd", "tpm", "tpd"]}),
    ]
    actions = ["enable", "disable"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[UpstreamModel]:
        # Also what the chain page's model picker (autocomplete) lists: each label names the provider.
        return super().get_queryset(request).select_related("provider")

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

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChainEntry]:
        # Each row's title names its chain and route (provider/model).
        return super().get_queryset(request).select_related("chain", "model__provider")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "model":
            # The autocomplete widget looks up each row's chosen model: with its provider, for the label.
            kwargs["queryset"] = UpstreamModel.objects.select_related("provider")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class FallbackChainForm(forms.ModelForm):
    class Meta:
        model = FallbackChain
        fields = "__all__"

    def clean_fusion(self):
        # An emptied field comes back as None; the column holds {} for "no fusion settings".
        return self.cleaned_data.get("fusion") or {}

    def clean(self):
        cleaned = super().clean()
        if problems := fusion_problems(cleaned.get("fusion") or {}, strategy=cleaned.get("strategy") or ""):
            self.add_error("fusion", problems)
        return cleaned


@admin.register(FallbackChain)
class FallbackChainAdmin(SortableAdminBase, admin.ModelAdmin):
    form = FallbackChainForm
    list_display = ["name", "kind", "strategy", "enabled", "route_list", "description"]
    list_filter = ["kind", "strategy", "enabled"]
    search_fields = ["name", "description"]
    fieldsets = [
        (None, {
            "fields": ["name", "kind", "strategy", "description", "enabled"],
            "description": "Clients send the chain's name as <code>model</code>; its models below are tried from "
                           "the top down. To reorder, drag a row by its striped title bar (or use the arrows to "
                           "move it to the top or bottom), then save.",
        }),
        ("Response cache", {
            "fields": ["cache_ttl", "cache_shared"],
            "description": "Deterministic requests (temperature 0 or a seed) get the same answer again without "
                           "an upstream call or quota for this many seconds. A request sending "
                           "<code>X-FreeLLM-Cache: no-store</code> skips the cache.",
        }),
        ("Fusion", {
            "fields": ["fusion"],
            "classes": ["collapse"],
            "description": "With strategy <em>fusion</em>: <code>panel</code> members of distinct providers "
                           "answer in parallel, then <code>judge</code> (provider/model) writes the answer from "
                           "their drafts (mode <code>judge</code>) or one draft is returned (mode "
                           "<code>best_of</code>).",
        }),
    ]  # fmt: skip
    inlines = [ChainEntryInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[FallbackChain]:
        return super().get_queryset(request).prefetch_related("entries__model__provider")

    @admin.display(description="models, in order")
    def route_list(self, obj: FallbackChain) -> str:
        return " → ".join(entry.model.route_name for entry in obj.entries.all())


@admin.register(ModelAlias)
class ModelAliasAdmin(SortableAdminMixin, admin.ModelAdmin):
    list_display = ["pattern", "target", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["pattern", "target"]
    fieldsets = [
        (None, {
            "fields": ["pattern", "target", "enabled"],
            "description": "A requested <code>model</code> that is no chain, provider/model or model id is "
                           "matched against the aliases from the top down; the first match is served by its "
                           "target. Drag rows in the list to reorder them.",
        }),
    ]  # fmt: skip

    def _update_order(self, updated_items, extra_model_filters):
        # Dragging reorders with bulk_update, which sends no post_save: send it, so that what listens (the
        # routing config) hears of the new order as of any other edit.
        updated = super()._update_order(updated_items, extra_model_filters)
        for alias in ModelAlias.objects.filter(pk__in=[pk for pk, _ in updated_items]):
            post_save.send(ModelAlias, instance=alias, created=False, update_fields=["position"], raw=False,
                           using=alias._state.db)
        return updated
