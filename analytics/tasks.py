"""Celery tasks: thin wrappers over analytics' services (scheduled in freellm/celery.py)."""

from __future__ import annotations

from celery import shared_task

from .services import request_logs_prune as _request_logs_prune
from .sessions import sticky_sessions_prune


# The old name, kept: it is what the beat rows of existing databases (django-celery-beat) point at.
@shared_task(name="routing.tasks.request_logs_prune")
def request_logs_prune() -> int:
    # The sticky-session mirror ages out with the request log it sits beside.
    return _request_logs_prune() + sticky_sessions_prune()
