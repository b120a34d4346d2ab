"""Celery tasks of analytics: thin wrappers over analytics/alerts.py (scheduled in the beat schedule)."""

from __future__ import annotations

import httpx
from celery import shared_task

from . import alerts


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
