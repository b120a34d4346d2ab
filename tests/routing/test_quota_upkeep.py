"""Quota upkeep: rollups into QuotaWindow, cooldown expiry, health probes, log pruning, the beat schedule,
the quota admin, and one task run by a real Celery worker on the Redis broker."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from providers.adapters.base import ErrorKind
from routing.models import QuotaWindow
from routing.quota.base import Lease, Limits, Route
from routing.quota.local import LocalQuotaStore
from tests.fixtures_gateway import add_provider
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _setup_routes():
    from providers.models import Provider, ProviderKey, UpstreamModel

    groq = Provider.objects.create(slug="groq", name="Groq", base_url="http://127.0.0.1:9/v1", account_rpd=1000)
    ProviderKey.objects.create(provider=groq, label="k1", secret="s1")
    ProviderKey.objects.create(provider=groq, label="k2", secret="s2", status=ProviderKey.Status.INVALID)
    UpstreamModel.objects.create(provider=groq, model_id="llama", rpm=30, tpm=6000)
    keyless = Provider.objects.create(slug="free", name="Free", base_url="http://127.0.0.1:9/v1", keyless=True)
    UpstreamModel.objects.create(provider=keyless, model_id="tiny")
    return Route("groq", "llama", "k1", Limits(rpm=30, tpm=6000), Limits(rpd=1000))


@pytest.mark.django_db(transaction=True)
async def test_rollup_writes_usage_learned_limits_and_health(quota_store):
    from routing.services_quota import quota_windows_rollup

    route = await sync_to_async(_setup_routes)()
    for _ in range(3):
        lease = await quota_store.reserve(route, 500)
        assert isinstance(lease, Lease)
    await quota_store.record(route, None, headers={"x-ratelimit-limit-tokens": "5000"})
    await quota_store.record(Route("groq", "llama", "k2"), ErrorKind.AUTH)

    written = await sync_to_async(quota_windows_rollup)(store=quota_store)
    # groq/llama × 2 keys × 4 windows, free/tiny × 1 implicit key × 4, groq's provider-wide RPD once.
    assert written == 8 + 4 + 1
    rows = {(w.model, w.key_label, w.window): w async for w in QuotaWindow.objects.filter(provider="groq")}
    tpm = rows[("llama", "k1", "tpm")]
    assert (tpm.used, tpm.limit, tpm.configured_limit, tpm.learned_limit) == (1500, 5000, 6000, 5000)
    assert rows[("llama", "k1", "rpm")].used == 3 and rows[("llama", "k1", "rpm")].health == "closed"
    assert rows[("llama", "k2", "rpm")].health == "key_invalid"
    assert (rows[("*", "", "provider_rpd")].used, rows[("*", "", "provider_rpd")].limit) == (3, 1000)

    # A 429 shows as open with its cooldown; a key removed from the config drops its rows.
    await quota_store.record(route, ErrorKind.RATE_LIMITED, retry_after=30)
    from providers.models import ProviderKey

    await ProviderKey.objects.filter(label="k2").adelete()
    await sync_to_async(quota_windows_rollup)(store=quota_store)
    rpm = await QuotaWindow.objects.aget(provider="groq", key_label="k1", window="rpm")
    assert rpm.health == "open" and rpm.cooldown_until is not None
    assert not await QuotaWindow.objects.filter(key_label="k2").aexists()


@pytest.mark.django_db
def test_rollup_in_the_worker_is_skipped_without_redis(settings):
    from routing.services_quota import quota_windows_rollup

    settings.REDIS_URL = ""
    _setup_routes()
    assert quota_windows_rollup() == 0
    assert not QuotaWindow.objects.exists()


@pytest.mark.django_db
def test_cooldown_expiry_turns_open_rows_half_open():
    from routing.services_quota import quota_cooldowns_expire

    now = timezone.now()
    common = {"provider": "groq", "model": "llama", "window": "rpm", "health": "open", "updated_at": now}
    QuotaWindow.objects.create(key_label="past", cooldown_until=now - timedelta(seconds=1), **common)
    QuotaWindow.objects.create(key_label="future", cooldown_until=now + timedelta(seconds=60), **common)
    assert quota_cooldowns_expire(now=now) == 1
    assert dict(QuotaWindow.objects.values_list("key_label", "health")) == {"past": "half_open", "future": "open"}


@pytest.mark.django_db
def test_request_logs_prune_keeps_recent_rows():
    from analytics.models import RequestLog
    from analytics.services import request_logs_prune

    now = timezone.now()
    for age in (0, 5, 29, 31, 90):
        RequestLog.objects.create(created_at=now - timedelta(days=age), endpoint="chat", status_code=200,
                                  outcome=RequestLog.Outcome.OK)  # fmt: skip
    assert request_logs_prune(keep_days=30, now=now, batch=1) == 2
    assert RequestLog.objects.count() == 3


@pytest.mark.django_db
def test_ensure_periodic_tasks_is_idempotent_and_keeps_admin_edits():
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from freellm.celery import PERIODIC_TASKS, ensure_periodic_tasks

    assert len(ensure_periodic_tasks()) == len(PERIODIC_TASKS)
    task = PeriodicTask.objects.get(name="freellm: quota windows rollup")
    task.enabled = False
    task.interval = IntervalSchedule.objects.create(every=600, period=IntervalSchedule.SECONDS)
    task.save()
    assert ensure_periodic_tasks() == []
    task.refresh_from_db()
    assert not task.enabled and task.interval.every == 600
    from freellm.celery import app

    # What a worker does at start-up: autodiscover every app's tasks module.
    app.loader.import_default_modules()
    assert {t for _, t, _ in PERIODIC_TASKS} <= set(app.tasks)


@pytest.mark.django_db(transaction=True)
def test_health_probe_marks_keys_and_never_probes_twice_per_interval(emulator, settings, tmp_path):
    from providers.models import ProviderKey
    from routing.quota import set_quota_store
    from routing.selectors_quota import keys_needing_probe
    from routing.services_quota import provider_key_probe

    settings.REDIS_URL = ""
    settings.VAR_DIR = tmp_path
    store = LocalQuotaStore(lease_ttl=60)
    add_provider(emulator, "groq", ["ok", "bad;401"], ["llama"])
    good, bad = ProviderKey.objects.order_by("label")
    good_route, bad_route = Route("groq", "llama", good.label), Route("groq", "llama", bad.label)
    set_quota_store(store)
    try:
        store.record_now(good_route, ErrorKind.AUTH)  # a stale failure the probe will disprove
        assert keys_needing_probe() == [good.id, bad.id]  # never tested yet

        assert provider_key_probe(key_id=good.id, interval=300, store=store).ok is True
        assert provider_key_probe(key_id=bad.id, interval=300, store=store).ok is False
        assert isinstance(store.reserve_now(good_route, 1), Lease)
        assert store.reserve_now(bad_route, 1).reason == "key_invalid"
        good.refresh_from_db()
        bad.refresh_from_db()
        assert (good.status, bad.status) == (ProviderKey.Status.ACTIVE, ProviderKey.Status.INVALID)
        # Probed keys are not probed again within the interval.
        calls = len(emulator.calls_for(provider="groq"))
        assert provider_key_probe(key_id=bad.id, interval=300, store=store) is None
        assert len(emulator.calls_for(provider="groq")) == calls
        assert keys_needing_probe() == [bad.id]
        assert provider_key_probe(key_id=bad.id, interval=0, store=store).ok is False
    finally:
        set_quota_store(None)


@pytest.fixture
def admin_client_local(client, django_user_model, settings):
    from routing.quota import set_quota_store

    settings.REDIS_URL = ""
    store = LocalQuotaStore(lease_ttl=60)
    set_quota_store(store)
    user = django_user_model.objects.create_superuser("root", password="x")
    client.force_login(user)
    yield client, store
    set_quota_store(None)


@pytest.mark.django_db
def test_quota_admin_lists_windows_and_clears_a_cooldown(admin_client_local):
    client, store = admin_client_local
    route = _setup_routes()
    store.record_now(route, ErrorKind.RATE_LIMITED, retry_after=600)
    assert store.reserve_now(route, 1).reason == "cooldown"

    page = client.get("/admin/routing/quotawindow/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "groq/llama/k1" in body and "open" in body
    # Secrets never show up in the quota admin.
    assert "s1" not in {w.strip("<>\"' ") for w in body.split()}

    rows = list(QuotaWindow.objects.filter(provider="groq", key_label="k1", model="llama").values_list("pk", flat=True))
    response = client.post("/admin/routing/quotawindow/", {"action": "clear_cooldown", "_selected_action": rows})
    assert response.status_code == 302
    assert isinstance(store.reserve_now(route, 1), Lease)
    assert set(QuotaWindow.objects.filter(key_label="k1").values_list("health", flat=True)) == {"closed"}


@pytest.mark.django_db
def test_quota_admin_shows_degraded_mode(admin_client_local):
    from routing.quota import set_quota_store
    from routing.quota.redis import RedisQuotaStore
    from routing.quota.resilient import ResilientQuotaStore

    client, _ = admin_client_local
    store = ResilientQuotaStore(RedisQuotaStore("redis://127.0.0.1:9/0"), LocalQuotaStore(lease_ttl=60))
    store.breaker.failed(ConnectionError("Connection refused"))
    set_quota_store(store)
    body = client.get("/admin/routing/quotawindow/").content.decode()
    assert "Redis is unavailable since" in body


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_runs_a_task_from_the_redis_broker(redis_url):
    """The beat schedule's tasks are importable and run by `celery worker` with Redis as the broker."""
    from celery import Celery
    from django.conf import settings

    from analytics.models import RequestLog
    from tests.fixtures_processes import _database_url

    old = RequestLog.objects.create(created_at=timezone.now() - timedelta(days=400), endpoint="chat",
                                    status_code=200, outcome=RequestLog.Outcome.OK)  # fmt: skip
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "freellm.settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "FREELLM_ENCRYPTION_KEYS": settings.FREELLM_ENCRYPTION_KEYS,
        "FREELLM_VAR_DIR": str(settings.VAR_DIR),
    }
    celery = Path(sys.executable).parent / "celery"
    worker = subprocess.Popen(
        [str(celery), "-A", "freellm", "worker", "--pool=solo", "--without-mingle", "--without-gossip",
         "--without-heartbeat", "--loglevel=WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        Celery(broker=redis_url).send_task("routing.tasks.request_logs_prune")
        pruned = wait_until(lambda: not RequestLog.objects.filter(pk=old.pk).exists(), timeout=60, interval=0.2,
                            alive=lambda: worker.poll() is None)
        assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
        assert pruned, "the worker did not run the task within 60 s"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


@pytest.mark.django_db
def test_quota_admin_actions_survive_a_redis_outage(admin_client_local, settings):
    from routing.quota import build_quota_store, set_quota_store

    client, _ = admin_client_local
    _setup_routes()
    row = QuotaWindow.objects.create(provider="groq", model="llama", key_label="k1", window="rpm",
                                     updated_at=timezone.now())  # fmt: skip
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    set_quota_store(build_quota_store())
    for action in ("clear_cooldown", "refresh_now"):
        response = client.post("/admin/routing/quotawindow/", {"action": action, "_selected_action": [row.pk]},
                               follow=True)  # fmt: skip
        assert response.status_code == 200
        assert "The quota store is unavailable" in response.content.decode()
