"""Admin: "Discover models" on a provider's change page and "Import keys" (a pasted .env) on the list.

Both are POST-only where they call a provider or write: discovery asks the provider's live model list
(``providers.services_discovery``) and "Add selected" asks again and adds the ticked models (never into
a chain); key import previews a paste (``providers.services_key_import``) and imports it on a second
POST. The paste is never rendered back: between the two steps it travels sealed (AES-GCM with the
secrets keyring, bound to the user and a 15-minute window) in a hidden field.
"""

from __future__ import annotations

import json
import time

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from .crypto import DecryptionError, keyring
from .services_discovery import provider_models_apply, provider_models_discover
from .services_key_import import key_import_apply, key_import_preview

_SEAL_AAD = b"providers.admin.key_import"
SEAL_SECONDS = 15 * 60


class PasteTextarea(forms.Textarea):
    """Never renders its value: a pasted key cannot come back in a page."""

    def format_value(self, value):
        return None


class KeyImportForm(forms.Form):
    text = forms.CharField(
        label="Paste a .env block or keys",
        widget=PasteTextarea(attrs={"rows": 12, "cols": 90, "autocomplete": "off", "spellcheck": "false"}),
        help_text="Lines like GROQ_API_KEY=gsk_… or bare keys, one per line. Nothing is written until you confirm.",
    )


def discovery_admin_urls(model_admin: admin.ModelAdmin) -> list[URLPattern]:
    """URLs to put in front of ``ProviderAdmin.get_urls()``."""
    opts = model_admin.opts

    def discover(request: HttpRequest, object_id: str) -> HttpResponse:
        return discover_models_view(model_admin, request, object_id)

    @sensitive_post_parameters("text", "sealed")
    def import_keys(request: HttpRequest) -> HttpResponse:
        return import_keys_view(model_admin, request)

    return [
        path("<path:object_id>/discover-models/", model_admin.admin_site.admin_view(discover),
             name=f"{opts.app_label}_{opts.model_name}_discover_models"),
        path("import-keys/", model_admin.admin_site.admin_view(import_keys),
             name=f"{opts.app_label}_{opts.model_name}_import_keys"),
    ]


def discover_models_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    if request.method != "POST":
        raise PermissionDenied  # a real upstream call: never on a GET
    provider = model_admin.get_object(request, object_id)
    if provider is None or not model_admin.has_change_permission(request, provider):
        raise PermissionDenied
    result = provider_models_discover(provider=provider)
    if request.POST.get("action") == "apply" and result.ok:
        if not request.user.has_perm("providers.add_upstreammodel"):
            raise PermissionDenied
        report = provider_models_apply(result=result, add=request.POST.getlist("add"),
                                       update=request.POST.getlist("update"))
        model_admin.message_user(
            request,
            f"Added {len(report.added)} model(s) and updated {len(report.updated)} from {provider.slug}'s list. "
            "New models join no chain: add them to one where you want them used.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:providers_provider_change", args=[provider.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": provider,
        "title": f"Discover models: {provider.name}",
        "result": result,
    }
    return TemplateResponse(request, "admin/providers/provider/discover_models.html", context)


@sensitive_variables("text", "form", "preview", "sealed")
def import_keys_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    if not (model_admin.has_add_permission(request) and request.user.has_perm("providers.add_providerkey")):
        raise PermissionDenied
    form = KeyImportForm()
    preview = outcomes = None
    sealed = ""
    if request.method == "POST" and request.POST.get("action") == "import":
        text = _unseal(request.POST.get("sealed", ""), request.user.pk)
        if text is None:
            model_admin.message_user(request, "The preview expired or was altered: paste the keys again.", messages.ERROR)
        else:
            preview = key_import_preview(text=text)
            outcomes = key_import_apply(preview=preview, test_keys=request.POST.get("test") == "on")
    elif request.method == "POST":
        form = KeyImportForm(request.POST)
        if form.is_valid():
            preview = key_import_preview(text=form.cleaned_data["text"])
            if preview.candidates:
                sealed = _seal(form.cleaned_data["text"], request.user.pk)
            form = KeyImportForm()
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Import keys from a .env",
        "form": form,
        "preview": preview,
        "grouped": preview.by_provider() if preview else {},
        "sealed": sealed,
        "outcomes": outcomes,
    }
    return TemplateResponse(request, "admin/providers/provider/import_keys.html", context)


@sensitive_variables("text")
def _seal(text: str, user_id: int) -> str:
    return keyring().encrypt(json.dumps({"user": user_id, "at": time.time(), "text": text}), _SEAL_AAD)


@sensitive_variables("sealed", "data")
def _unseal(sealed: str, user_id: int) -> str | None:
    try:
        data = json.loads(keyring().decrypt(sealed, _SEAL_AAD))
    except (DecryptionError, ValueError, TypeError):
        return None
    if data.get("user") != user_id or time.time() - float(data.get("at", 0)) > SEAL_SECONDS:
        return None
    return data.get("text")
