from __future__ import annotations

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing & access"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from providers.config_schema import register_config_section
        from providers.signals import bump_routing_config

        from .config_budgets import USERS_SECTION
        from .models import ApiKey, UserBudget

        # A revoked or deleted key must stop working in every process: it lives in the auth cache. So do the
        # budgets that come with it (the key's own and its user's).
        for model in (ApiKey, UserBudget):
            post_save.connect(bump_routing_config, sender=model, dispatch_uid=f"bump-{model.__name__}")
            post_delete.connect(bump_routing_config, sender=model, dispatch_uid=f"bump-{model.__name__}-del")
        # The config file's `users:` section (budgets), imported and exported with providers and chains.
        register_config_section(USERS_SECTION)
