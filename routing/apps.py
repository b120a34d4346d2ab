from __future__ import annotations

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing & access"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from providers.signals import bump_routing_config

        from .models import ApiKey

        # A revoked or deleted key must stop working in every process: it lives in the auth cache.
        post_save.connect(bump_routing_config, sender=ApiKey, dispatch_uid="bump-ApiKey")
        post_delete.connect(bump_routing_config, sender=ApiKey, dispatch_uid="bump-ApiKey-del")
