from __future__ import annotations

from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers & routing config"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (routing-config cache invalidation)
