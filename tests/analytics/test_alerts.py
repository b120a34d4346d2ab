"""Alert rules open and resolve incidents; the webhook hears once per opening and once per recovery (a local
receiver), in process and from a real Celery worker; the admin shows open incidents as a banner."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from analytics.alerts import Event, alerts_evaluate, incident_notify
from analytics.models import Incident, RequestLog
from providers.models import Provider, ProviderKey, UpstreamModel
from tests.polling import wait_until
from tests.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent.parent
Rule = Incident.Rule


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_drop_baseline():
    from django.core.cache import cache

    from analytics.alerts import _DROPS_CACHE_KEY

    cache.delete(_DROPS_CACHE_KEY)


def _provider(slug="groq", keys=("k1",), models=(("llama", {}),)):
    provider = Provider.objects.create(slug=slug, name=slug, base_url="https://example.invalid/v1")
    for label in keys:
        ProviderKey.objects.create(provider=provider, label=label, secret="s3cret-" + label)
    for model_id, fields in models:
        UpstreamModel.objects.create(provider=provider, model_id=model_id, **fields)
    return provider


@pytest.mark.django_db
def test_an_invalid_key_fires_once_and_recovers_once(receiver, settings):
    settings.FREELLM_ALERT_WEBHOOK = receiver.url
    _provider()
    key = ProviderKey.objects.get(label="k1")
    assert alerts_evaluate(rules={Rule.KEY_INVALID}) == []

    key.status, key.status_detail = ProviderKey.Status.INVALID, "rejected by groq/llama (401)"
    key.save()
    [(incident_id, event)] = alerts_evaluate(rules={Rule.KEY_INVALID})
    assert event == Event.FIRED
    assert alerts_evaluate(rules={Rule.KEY_INVALID}) == []  # still open: nothing new to say
    assert incident_notify(incident_id=incident_id, event=event) is True
    assert incident_notify(incident_id=incident_id, event=event) is False  # once
    incident = Incident.objects.get(pk=incident_id)
    assert incident.state == Incident.State.OPEN and incident.notified_at and incident.last_seen >= incident.first_seen

    key.status = ProviderKey.Status.ACTIVE
    key.save()
    assert alerts_evaluate(rules={Rule.KEY_INVALID}) == [(incident_id, Event.RESOLVED)]
    assert incident_notify(incident_id=incident_id, event=Event.RESOLVED) is True
    assert incident_notify(incident_id=incident_id, event=Event.RESOLVED) is False
    assert alerts_evaluate(rules={Rule.KEY_INVALID}) == []

    fired, recovered = receiver.posts
    assert fired["text"].startswith(":rotating_light: freellm alert: provider key invalid.")
    assert "groq/k1 is invalid: rejected by groq/llama (401)" in fired["text"]
    assert fired["blocks"][0]["text"]["text"] == fired["text"]
    assert recovered["text"].startswith(":white_check_mark: freellm recovered: provider key invalid.")
    assert "s3cret" not in str(receiver.posts)
    assert Incident.objects.get(pk=incident_id).state == Incident.State.RESOLVED


@pytest.mark.django_db
def test_a_route_failing_above_the_threshold(settings):
    settings.FREELLM_ALERT_MIN_CALLS = 4
    now = timezone.now()

    def row(outcomes, minutes_ago=1):
        trail = [{"route": "groq/llama/k1", "outcome": o, "ms": 5} for o in outcomes]
        RequestLog.objects.create(created_at=now - timedelta(minutes=minutes_ago), endpoint="chat", status_code=200,
                                  outcome="ok", trail=trail)

    row(["server_error", "ok"])
    row(["ok"])
    row(["server_error", "skipped:rpm"], minutes_ago=60)  # outside the window
    assert alerts_evaluate(rules={Rule.ROUTE_FAILING}, now=now) == []  # 1 of 3 calls
    row(["timeout", "server_error", "ok"])
    [(incident_id, _)] = alerts_evaluate(rules={Rule.ROUTE_FAILING}, now=now)
    incident = Incident.objects.get(pk=incident_id)
    assert incident.key == "route_failing:groq/llama/k1"
    assert "failed 3 of 6 calls (50%)" in incident.summary and "mostly server_error" in incident.summary
    later = now + timedelta(seconds=settings.FREELLM_ALERT_WINDOW + 120)
    assert alerts_evaluate(rules={Rule.ROUTE_FAILING}, now=later) == [(incident_id, Event.RESOLVED)]


@pytest.mark.django_db
def test_a_chain_with_no_usable_member():
    from asgiref.sync import async_to_sync

    from providers.adapters.base import ErrorKind
    from providers.models import ChainEntry, FallbackChain
    from routing.config import load_routing_config
    from routing.quota.local import LocalQuotaStore

    _provider(models=(("llama", {}), ("mixtral", {})))
    fast = FallbackChain.objects.create(name="fast")
    ChainEntry.objects.create(chain=fast, model=UpstreamModel.objects.get(model_id="llama"), position=1)
    empty = FallbackChain.objects.create(name="empty")
    ChainEntry.objects.create(chain=empty, model=UpstreamModel.objects.get(model_id="mixtral"), position=1)
    UpstreamModel.objects.filter(model_id="mixtral").update(enabled=False)
    store = LocalQuotaStore()
    [(empty_id, _)] = alerts_evaluate(rules={Rule.CHAIN_UNUSABLE}, store=store)
    assert Incident.objects.get(pk=empty_id).key == "chain_unusable:empty"

    route = load_routing_config().by_name["groq/llama"]
    route = route.route(route.keys[0])
    for _ in range(2):  # the failure threshold: the circuit opens
        async_to_sync(store.record)(route, ErrorKind.SERVER)
    [(fast_id, event)] = alerts_evaluate(rules={Rule.CHAIN_UNUSABLE}, store=store)
    assert event == Event.FIRED and "Chain fast has no usable member" in Incident.objects.get(pk=fast_id).summary
    async_to_sync(store.record)(route, None)
    assert alerts_evaluate(rules={Rule.CHAIN_UNUSABLE}, store=store) == [(fast_id, Event.RESOLVED)]


@pytest.mark.django_db
def test_a_daily_quota_forecast_to_run_out_before_its_reset():
    from asgiref.sync import async_to_sync

    from routing.quota.local import LocalQuotaStore
    from routing.selectors_quota import quota_routes

    _provider(models=(("llama", {"rpd": 10}),))
    morning = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    clock = [morning.timestamp()]
    store = LocalQuotaStore(now=lambda: clock[0])
    [route] = quota_routes()
    for _ in range(5):
        async_to_sync(store.reserve)(route, 0)
    # 5 of 10 in 6 hours: 20 by midnight.
    [(incident_id, _)] = alerts_evaluate(rules={Rule.QUOTA_FORECAST}, store=store, now=morning)
    incident = Incident.objects.get(pk=incident_id)
    assert incident.key == "quota_forecast:groq/llama/k1:rpd"
    assert "5 of 10 requests used today; at this pace the daily quota runs out at ~12:00 UTC" in incident.summary
    # The same 5 late in the evening are no threat: resolved.
    evening = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    clock[0] = evening.timestamp()
    assert alerts_evaluate(rules={Rule.QUOTA_FORECAST}, store=store, now=evening) == [(incident_id, Event.RESOLVED)]


@pytest.mark.django_db
def test_request_log_drops(settings):
    from routing import metrics

    now = timezone.now()
    assert alerts_evaluate(rules={Rule.REQUEST_LOG_DROPS}, now=now) == []  # the baseline
    metrics.request_log_dropped_total.inc(2)
    [(incident_id, _)] = alerts_evaluate(rules={Rule.REQUEST_LOG_DROPS}, now=now + timedelta(seconds=60))
    assert "2 request-log row(s) could not be written" in Incident.objects.get(pk=incident_id).summary
    metrics.request_log_dropped_total.inc(1)
    assert alerts_evaluate(rules={Rule.REQUEST_LOG_DROPS}, now=now + timedelta(seconds=120)) == []
    assert "3 request-log row(s)" in Incident.objects.get(pk=incident_id).summary
    quiet = now + timedelta(seconds=120 + settings.FREELLM_ALERT_WINDOW + 1)
    assert alerts_evaluate(rules={Rule.REQUEST_LOG_DROPS}, now=quiet) == [(incident_id, Event.RESOLVED)]


@pytest.mark.django_db
def test_open_incidents_are_a_banner_for_staff(team):
    _provider()
    ProviderKey.objects.filter(label="k1").update(status=ProviderKey.Status.INVALID)
    alerts_evaluate(rules={Rule.KEY_INVALID})

    def page(user) -> str:
        client = Client()
        client.force_login(user)
        return client.get("/admin/").content.decode()

    staff_page = page(team.staff)
    assert 'id="freellm-alerts"' in staff_page and "Provider key groq/k1 is invalid" in staff_page
    assert "freellm-alerts" not in page(team.alice)  # members see no operations alerts


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_notifies_once_with_retries_and_once_on_recovery(redis_url):
    """The beat task run by `celery worker` (Redis broker) opens the incident and queues the webhook, which the
    worker retries past a refusing receiver; recovery is told once, and evaluating again says nothing more."""
    from celery import Celery
    from django.conf import settings

    from tests.fixtures_processes import _database_url

    receiver = WebhookReceiver(fail_first=1)
    _provider(keys=("k1", "k2"))
    ProviderKey.objects.filter(label="k1").update(status=ProviderKey.Status.INVALID)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "freellm.settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "FREELLM_ENCRYPTION_KEYS": settings.FREELLM_ENCRYPTION_KEYS,
        "FREELLM_VAR_DIR": str(settings.VAR_DIR),
        "FREELLM_ALERT_WEBHOOK": receiver.url,
    }
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "freellm", "worker", "--pool=solo", "--without-mingle",
         "--without-gossip", "--without-heartbeat", "--loglevel=WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    broker = Celery(broker=redis_url)

    def wait_for(predicate, what: str) -> None:
        if not wait_until(predicate, timeout=60, interval=0.1, alive=lambda: worker.poll() is None):
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
            raise AssertionError(f"{what} within 60 s")

    try:
        broker.send_task("analytics.tasks.alerts_evaluate")
        wait_for(lambda: len(receiver.posts) == 1, "the worker told the webhook (after one refusal)")
        assert receiver.refused == 1 and "groq/k1 is invalid" in receiver.texts()[0]
        broker.send_task("analytics.tasks.alerts_evaluate")
        wait_for(lambda: Incident.objects.filter(last_seen__gt=Incident.objects.get().first_seen).exists(),
                 "the second evaluation")
        ProviderKey.objects.filter(label="k1").update(status=ProviderKey.Status.ACTIVE)
        broker.send_task("analytics.tasks.alerts_evaluate")
        wait_for(lambda: len(receiver.posts) == 2, "the recovery was told")
        assert receiver.texts()[1].startswith(":white_check_mark:")
        # Another key goes bad: the next evaluation tells that, and nothing more about the first.
        ProviderKey.objects.filter(label="k2").update(status=ProviderKey.Status.INVALID)
        broker.send_task("analytics.tasks.alerts_evaluate")
        wait_for(lambda: len(receiver.posts) == 3, "the second key's alert")
        assert "groq/k2 is invalid" in receiver.texts()[2]
        assert len(receiver.posts) == 3 and receiver.refused == 1
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        receiver.stop()

