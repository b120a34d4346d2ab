from __future__ import annotations

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing & access"

    def ready(self) -> None:
        from providers.config_schema import register_config_section

        from .config_budgets import USERS_SECTION
        from .signals import connect_config_receivers

        connect_config_receivers()
        # The config file's `users:` section (budgets), imported and exported with providers and chains.
        register_config_section(USERS_SECTION)
