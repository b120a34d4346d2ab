from __future__ import annotations

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing & access"

    def ready(self) -> None:
        from .signals import connect_config_receivers

        connect_config_receivers()
