"""The admin's *Connect a client* page: the snippets of ``routing.clients`` for one of the user's own keys.

Everyone who may see API keys (members and staff) gets it, always for their OWN keys: the page is about
setting up your tools, and it names a key only by its visible prefix (the full key is never stored).
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from .clients import AGENT_TITLES, DEFAULT_MODEL, client_config
from .selectors import api_keys_active_of, chat_chain_names
from .services import api_key_create


class ConnectForm(forms.Form):
    agent = forms.ChoiceField(label="Tool", choices=list(AGENT_TITLES.items()), initial="claude-code")
    key = forms.ChoiceField(
        label="Your key", required=False, error_messages={"invalid_choice": "That is not one of your active keys."}
    )
    model = forms.ChoiceField(label="Model", initial=DEFAULT_MODEL)

    def __init__(self, data, *, user) -> None:
        super().__init__(data)
        keys = api_keys_active_of(user=user)
        self.fields["key"].choices = [(k.prefix, f"{k.prefix}… ({k.name})") for k in keys]
        # Chains first (what a team normally asks for); the default one even before it exists.
        chains = chat_chain_names()
        if DEFAULT_MODEL not in chains:
            chains.insert(0, DEFAULT_MODEL)
        self.fields["model"].choices = [(name, name) for name in chains]
        self.has_keys = bool(self.fields["key"].choices)

    def value(self, name: str) -> str:
        """The cleaned choice, or the field's default while nothing (valid) was chosen for it."""
        if self.is_bound and (self.is_valid() or name in self.cleaned_data) and self.cleaned_data.get(name):
            return self.cleaned_data[name]
        field = self.fields[name]
        return field.initial or (field.choices[0][0] if field.choices else "")


def connect_client_view(request: HttpRequest, *, context: dict, can_create_keys: bool) -> TemplateResponse:
    """GET: the snippets for the chosen tool, key and model. POST (*New key for this tool*): create a key
    named after the tool and show the snippets with it in full, this once."""
    if request.method == "POST" and can_create_keys:
        form = ConnectForm(request.POST, user=request.user)
        agent, model = form.value("agent"), form.value("model")
        api_key, raw_key = api_key_create(user=request.user, name=AGENT_TITLES[agent])
        # The page now stands for the new key, as if it had been picked.
        form = ConnectForm({"agent": agent, "key": api_key.prefix, "model": model}, user=request.user)
    else:
        form, api_key, raw_key = ConnectForm(request.GET or None, user=request.user), None, None
    config = client_config(
        agent=form.value("agent"),
        base_url=settings.FREELLM_PUBLIC_URL,
        key=raw_key,
        key_prefix=form.value("key") or None,
        model=form.value("model"),
    )
    response = TemplateResponse(
        request,
        "admin/routing/apikey/connect.html",
        {**context, "title": "Connect a client", "form": form, "config": config, "new_key": api_key,
         "can_create_keys": can_create_keys, "model": form.value("model"), "base_url": settings.FREELLM_PUBLIC_URL},  # fmt: skip
    )
    if raw_key:
        # The only page that ever holds this key: no cache, no back-button copy of it.
        add_never_cache_headers(response)
    return response
