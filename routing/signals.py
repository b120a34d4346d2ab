"""Routing's signals: the receivers that keep the routing config current, and what routing tells the layers
above it.

Any change to providers, keys, models, chains, aliases or API keys bumps the routing-config version (see
routing.config). The receivers live here, beside the cache they invalidate, and are connected by
``RoutingConfig.ready``: providers, at the ground, knows nothing of routing.

Routing never imports analytics (it sits above): what analytics records about routing it learns from
``session_served``, which it connects to in ``AnalyticsConfig.ready``.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal

# Sent from the event loop each time a sticky session serves a turn (its receivers must not block), with
# keyword arguments key, source, api_key_id, provider, model, switches, created, last_used (epoch
# seconds) and switch_reason ("" when the turn did not switch).
session_served = Signal()


def bump_routing_config(sender, **kwargs) -> None:
    from django.db import transaction

    from .config import bump_config_version

    bump_config_version()
    # Again once the change is committed: a process that reloaded in between read the old rows and would
    # otherwise keep them under the new version.
    transaction.on_commit(bump_config_version)


def connect_config_receivers() -> None:
    from providers.models import ChainEntry, FallbackChain, ModelAlias, Provider, ProviderKey, UpstreamModel

    from .models import ApiKey, UserBudget

    # ApiKey too: a revoked or deleted key must stop working in every process (it lives in the auth cache), and
    # so must the budgets that come with it (the key's own and its user's).
    for model in (Provider, ProviderKey, UpstreamModel, FallbackChain, ChainEntry, ModelAlias, ApiKey, UserBudget):
        post_save.connect(bump_routing_config, sender=model, dispatch_uid=f"bump-{model.__name__}")
        post_delete.connect(bump_routing_config, sender=model, dispatch_uid=f"bump-{model.__name__}-del")
    # So must a deactivated (or deleted) user's keys. Not for the last_login write of every admin login.
    post_save.connect(_bump_unless_login, sender=settings.AUTH_USER_MODEL, dispatch_uid="bump-User")
    post_delete.connect(bump_routing_config, sender=settings.AUTH_USER_MODEL, dispatch_uid="bump-User-del")


def _bump_unless_login(sender, update_fields=None, **kwargs) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    bump_routing_config(sender, update_fields=update_fields, **kwargs)
