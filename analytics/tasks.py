"""Celery tasks: thin wrappers over analytics' services and alerts (scheduled in freellm/celery.py)."""

from __future__ import annotations

import httpx
from celery import shared_task

from . import alerts
from .services import request_logs_prune as _request_logs_prune
from .sessions import sticky_sessions_prune


# The old name, kept: it is what the beat rows of existing databases (django-celery-beat) point at.
@shared_task(name="routing.tasks.request_logs_prune")
def request_logs_prune() -> int:
    # The sticky-session mirror ages out with the request log it sits beside.
    return _request_logs_prune() + sticky_sessions_prune()


@shared_task(name="analytics.tasks.alerts_evaluate")
def alerts_evaluate() -> int:
    """Run the alert rules the worker can see; queue one webhook message per opening and recovery."""
    changes = alerts.alerts_evaluate(rules=alerts.rules_for_worker())
    alerts_notify_queue(changes)
    return len(changes)


def alerts_notify_queue(changes: list[tuple[int, str]]) -> None:
    for incident_id, event in changes:
        alert_notify.delay(incident_id, str(event))


# The receiver may be down for a while: back off up to 10 minutes between tries, for about an hour.
@shared_task(name="analytics.tasks.alert_notify", autoretry_for=(httpx.HTTPError, alerts.AlertDeliveryError),
             retry_backoff=2, retry_backoff_max=600, retry_jitter=False, max_retries=12)
def alert_notify(incident_id: int, event: str) -> bool:
    return alerts.incident_notify(incident_id=incident_id, event=event)
