"""The Celery worker outlives a Redis outage (found by tests/soak_production.py).

The health-probe sweep queues its probes with a countdown, so the worker nearly always holds unacknowledged
messages; celery 5.7.0 crashed ("Unrecoverable error: AttributeError ... 'hostname'") when the broker
connection dropped while it held any, and no beat job ran again until someone restarted the worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.fixtures_quota import ThrowawayRedis
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(predicate, seconds: float, what: str, worker: subprocess.Popen, log: Path) -> None:
    done = wait_until(predicate, timeout=seconds, interval=0.1, alive=lambda: worker.poll() is None)
    assert worker.poll() is None, f"the worker died: {log.read_text()[-3000:]}"
    assert done, f"{what} within {seconds:.0f} s: {log.read_text()[-3000:]}"


@pytest.mark.django_db(transaction=True)
def test_the_worker_reconnects_after_redis_dies_while_it_holds_a_countdown_task(tmp_path):
    from celery import Celery
    from django.conf import settings

    from analytics.models import RequestLog
    from tests.fixtures_processes import _database_url

    redis = ThrowawayRedis()
    redis.start()
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "freellm.settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis.url,
        "SECRET_KEY": settings.SECRET_KEY,
        "FREELLM_ENCRYPTION_KEYS": settings.FREELLM_ENCRYPTION_KEYS,
        "FREELLM_VAR_DIR": str(settings.VAR_DIR),
    }
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "freellm", "worker", "--pool=solo",
             "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel=INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        # Held by the worker until its ETA, unacknowledged, like a probe the sweep spread over the interval.
        Celery(broker=redis.url).send_task("routing.tasks.quota_cooldowns_expire", countdown=600)
        _wait_for(lambda: " received" in log.read_text(), 60, "the worker did not receive the task", worker, log)

        redis.kill()
        _wait_for(lambda: "Connection to broker lost" in log.read_text(), 30, "the worker did not notice",
                  worker, log)
        redis.start()

        old = RequestLog.objects.create(created_at=timezone.now() - timedelta(days=400), endpoint="chat",
                                        status_code=200, outcome=RequestLog.Outcome.OK)  # fmt: skip
        Celery(broker=redis.url).send_task("routing.tasks.request_logs_prune")
        _wait_for(lambda: not RequestLog.objects.filter(pk=old.pk).exists(), 60,
                  "the worker ran no task after Redis came back", worker, log)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        redis.kill()
