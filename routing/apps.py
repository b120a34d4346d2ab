from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


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
        # So must a deactivated (or deleted) user's keys. Not for the last_login write of every admin login.
        post_save.connect(_bump_unless_login, sender=settings.AUTH_USER_MODEL, dispatch_uid="bump-User")
        post_delete.connect(bump_routing_config, sender=settings.AUTH_USER_MODEL, dispatch_uid="bump-User-del")


def _bump_unless_login(sender, update_fields=None, **kwargs) -> None:
    from providers.signals import bump_routing_config

    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    bump_routing_config(sender, update_fields=update_fields, **kwargs)
