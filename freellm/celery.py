"""The Celery app, and the beat schedule: the one place that says which upkeep jobs run how often.

Beat reads its schedule from the database (django-celery-beat), so that an admin can change it; ``manage.py
bootstrap`` creates the rows below when they are missing. Like freellm's other plumbing, this module imports
none of the apps: tasks are found by name (``autodiscover_tasks``).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "freellm.settings")

app = Celery("freellm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

PERIODIC_TASKS = (
    # name, task, every (seconds; None: FREELLM_PROBE_INTERVAL)
    ("freellm: quota windows rollup", "routing.tasks.quota_windows_rollup", 60),
    ("freellm: cooldown expiry", "routing.tasks.quota_cooldowns_expire", 30),
    ("freellm: health probes", "routing.tasks.health_probe_sweep", None),
    ("freellm: prune request logs", "routing.tasks.request_logs_prune", 6 * 3600),  # analytics/tasks.py
    # Stored Responses API answers past FREELLM_RESPONSES_TTL (database rows only: Redis expires its own).
    ("freellm: prune stored responses", "routing.tasks.stored_responses_prune", 3600),
    ("freellm: alerts", "analytics.tasks.alerts_evaluate", 60),  # analytics/tasks.py
)


def ensure_periodic_tasks() -> list[str]:
    """Create the beat schedule's PeriodicTask rows if missing (idempotent; an admin's edits to existing
    rows are kept). Returns the names created. Called by ``manage.py bootstrap``."""
    from django.conf import settings
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    created = []
    for name, task, every in PERIODIC_TASKS:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        schedule, _ = IntervalSchedule.objects.get_or_create(
            every=every or settings.FREELLM_PROBE_INTERVAL, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(name=name, task=task, interval=schedule)
        created.append(name)
    return created
