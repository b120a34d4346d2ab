from __future__ import annotations

from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    verbose_name = "Analytics"

    def ready(self) -> None:
        from routing.signals import session_served

        from .sessions import mirror_session

        # Routing announces each turn of a sticky session; the admin's mirror of sessions is ours to write.
        session_served.connect(mirror_session, dispatch_uid="analytics-session-mirror")
