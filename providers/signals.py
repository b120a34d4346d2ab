"""Any change to providers, keys, models, chains or aliases bumps the routing-config version (see routing.config)."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from .models import ChainEntry, FallbackChain, ModelAlias, Provider, ProviderKey, UpstreamModel


def bump_routing_config(sender, **kwargs) -> None:
    from django.db import transaction

    from routing.config import bump_config_version

    bump_config_version()
    # Again once the change is committed: a process that reloaded in between read the old rows and would
    # otherwise keep them under the new version.
    transaction.on_commit(bump_config_version)


for _model in (Provider, ProviderKey, UpstreamModel, FallbackChain, ChainEntry, ModelAlias):
    post_save.connect(bump_routing_config, sender=_model, dispatch_uid=f"bump-{_model.__name__}")
    post_delete.connect(bump_routing_config, sender=_model, dispatch_uid=f"bump-{_model.__name__}-del")
