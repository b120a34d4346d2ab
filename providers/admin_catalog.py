"""Admin page "Add from catalog": pick a catalog provider, paste keys, get it tested and placed in `auto`.

Linked from the Provider change list (templates/admin/providers/provider/change_list.html); the work is
done by ``providers.services_catalog.provider_add_from_catalog``. Pasted keys are never rendered back:
the result page shows masked secrets only and a re-shown form starts with an empty key box.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from .catalog import CatalogError, catalog_providers
from .models import Provider
from .netguard import upstream_url_validator
from .services_catalog import AUTO_CHAIN, embedding_chain_name, provider_add_from_catalog


class SecretTextarea(forms.Textarea):
    """A textarea that never renders its value, so a pasted key cannot come back in a page."""

    def format_value(self, value):
        return None


class CatalogAddForm(forms.Form):
    provider = forms.ChoiceField(label="Provider")
    keys = forms.CharField(
        label="API keys",
        required=False,
        widget=SecretTextarea(attrs={"rows": 4, "cols": 80, "autocomplete": "off", "spellcheck": "false"}),
        help_text="One key per line. Each is checked with one real, cheap call. Keyless providers need none.",
    )
    base_url = forms.URLField(
        label="Base URL override",
        required=False,
        assume_scheme="https",
        validators=[upstream_url_validator],
        help_text="Leave blank to use the catalog's URL (set it for a proxy or a local mirror).",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = [
            (p.slug, f"{p.name}{' (keyless)' if p.keyless else ''}") for p in catalog_providers()
        ]


def catalog_admin_urls(model_admin: admin.ModelAdmin) -> list[URLPattern]:
    """URLs to put in front of ``ProviderAdmin.get_urls()``."""
    name = f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_add_from_catalog"

    # Keep pasted keys out of Django's error reports (POST data and local variables).
    @sensitive_post_parameters("keys")
    def view(request: HttpRequest) -> HttpResponse:
        return add_from_catalog_view(model_admin, request)

    return [path("add-from-catalog/", model_admin.admin_site.admin_view(view), name=name)]


@sensitive_variables("form")
def add_from_catalog_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    if not (model_admin.has_add_permission(request) and request.user.has_perm("providers.add_providerkey")):
        raise PermissionDenied
    result = None
    if request.method == "POST":
        form = CatalogAddForm(request.POST)
        if form.is_valid():
            try:
                result = provider_add_from_catalog(
                    slug=form.cleaned_data["provider"],
                    keys=form.cleaned_data["keys"].splitlines(),
                    base_url=form.cleaned_data["base_url"] or None,
                )
            except CatalogError as exc:
                form.add_error("keys", str(exc))
        if result is not None:
            form = CatalogAddForm(initial={"provider": form.cleaned_data["provider"]})
    else:
        form = CatalogAddForm(initial={"provider": request.GET.get("provider", "")})
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Add a provider from the catalog",
        "form": form,
        "result": result,
        "catalog": catalog_providers(),
        "chains": _chain_summary(result.provider) if result else [],
    }
    return TemplateResponse(request, "admin/providers/provider/add_from_catalog.html", context)


def _chain_summary(provider: Provider) -> list[dict]:
    """The chains the provider's models now sit in, each with its full ordered route list."""
    from .models import FallbackChain

    names = {AUTO_CHAIN} | {
        embedding_chain_name(m.family) for m in provider.models.all() if m.kind == "embedding" and m.family
    }
    chains = []
    for chain in FallbackChain.objects.filter(name__in=names).prefetch_related("entries__model__provider"):
        routes = [
            {"route": entry.model.route_name, "mine": entry.model.provider_id == provider.pk}
            for entry in chain.entries.all()
        ]
        chains.append({"name": chain.name, "kind": chain.kind, "routes": routes})
    return chains
