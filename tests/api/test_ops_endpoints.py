"""/livez, /readyz and /metrics: what probes and Prometheus see, after known traffic and with a dependency down."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

HI = [{"role": "user", "content": "hi"}]


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _scrape(url: str) -> dict:
    resp = httpx.get(f"{url}/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return _samples(resp.text)


@pytest.fixture
def configured(gateway, emulator):
    add_provider(emulator, "groq", ["bad;429", "good"], ["llama"])
    add_chain("auto", ["groq/llama"])
    return gateway


def _chat(gw, url=None, model="auto", **kw):
    return httpx.post(f"{url or gw.url}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gw.api_key}"},
                      json={"model": model, "messages": HI, **kw})


def test_livez_answers_without_any_dependency(gateway):
    resp = httpx.get(f"{gateway.url}/livez")
    assert (resp.status_code, resp.json()) == (200, {"status": "ok"})


def test_readyz_reports_each_check(configured):
    body = httpx.get(f"{configured.url}/readyz").json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["routing_config"]["ok"]
    assert body["checks"]["routing_config"]["models"] == 1


def test_readyz_is_503_when_the_database_is_unreachable(configured):
    from django.db import connections

    assert httpx.get(f"{configured.url}/readyz").status_code == 200  # the routing config is loaded now
    settings_dict = connections.settings["default"]
    saved = dict(settings_dict)
    # The check opens a connection of its own in a thread of its own, from these settings.
    pooled = hasattr(connections["default"], "close_pool")
    if settings_dict["ENGINE"].endswith("sqlite3"):
        settings_dict["NAME"] = "/nonexistent-dir/freellm.sqlite3"
        settings_dict.setdefault("TEST", {})
    else:
        settings_dict["PORT"] = 1
        if pooled:
            connections["default"].close_pool()  # the next connection comes from a pool with these settings
    try:
        resp = httpx.get(f"{configured.url}/readyz")
    finally:
        settings_dict.clear()
        settings_dict.update(saved)
        if pooled and not settings_dict["ENGINE"].endswith("sqlite3"):
            connections["default"].close_pool()
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "fail" and body["checks"]["database"]["ok"] is False
    # A connection refused outright, or (PostgreSQL's pool retrying the refused server) no answer in time.
    assert body["checks"]["database"]["error"] in ("OperationalError", "no answer within 2s")
    assert body["checks"]["routing_config"]["ok"] is True


def test_readyz_is_503_when_redis_is_down(configured, settings, throwaway_redis):
    settings.REDIS_URL = throwaway_redis.url
    assert httpx.get(f"{configured.url}/readyz").json()["checks"]["redis"]["ok"] is True
    throwaway_redis.kill()
    resp = httpx.get(f"{configured.url}/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["redis"]["ok"] is False
    assert resp.json()["checks"]["database"]["ok"] is True


def test_metrics_count_requests_calls_tokens_and_route_state(configured):
    before = _scrape(configured.url)
    assert _chat(configured).status_code == 200  # the 429 key first or second: one or two calls
    assert _chat(configured, stream=True).status_code == 200
    assert _chat(configured, model="nope").status_code == 404
    wait_until_idle()
    after = _scrape(configured.url)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("freellm_requests_total", endpoint="chat", dialect="openai", outcome="ok", status="200") == 2
    assert delta("freellm_requests_total", outcome="client_error", status="404") == 1
    ok_calls = delta("freellm_upstream_calls_total", provider="groq", model="llama", outcome="ok")
    limited = delta("freellm_upstream_calls_total", provider="groq", model="llama", outcome="rate_limited")
    assert ok_calls == 2 and limited == 1  # the 429 key cools down after its first refusal
    assert delta("freellm_tokens_total", provider="groq", kind="completion") > 0
    assert delta("freellm_request_duration_seconds_count", endpoint="chat") == 3
    assert delta("freellm_ttft_seconds_count", dialect="openai") == 1
    assert delta("freellm_gateway_overhead_seconds_count", endpoint="chat") == 2
    # Read at scrape time: the refused key is cooling down (open), the other closed.
    assert _value(after, "freellm_route_state", key="groq-0", state="open") == 1
    assert _value(after, "freellm_route_state", key="groq-1", state="closed") == 1
    assert 0 <= _value(after, "freellm_route_headroom", key="groq-1") <= 1
    names = {name for name, _ in after}
    assert not any(name for name in names if "secret" in name)


def test_every_answer_carries_a_request_id_kept_in_the_log(configured):
    from analytics.models import RequestLog

    ok, missing = _chat(configured), _chat(configured, model="nope")
    wait_until_idle()
    ids = [ok.headers["X-FreeLLM-Request-Id"], missing.headers["X-FreeLLM-Request-Id"]]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == sorted(ids)
    # Answers without a row carry one too (here a 401 and the model list), fresh each time.
    unauthorised = httpx.post(f"{configured.base_url}/chat/completions", json={"model": "auto", "messages": HI})
    listed = httpx.get(f"{configured.base_url}/models", headers={"Authorization": f"Bearer {configured.api_key}"})
    assert unauthorised.status_code == 401 and listed.status_code == 200
    assert len({unauthorised.headers["X-FreeLLM-Request-Id"], listed.headers["X-FreeLLM-Request-Id"], *ids}) == 4


@pytest.mark.parametrize(("remote", "headers", "token", "status"), [
    ("10.1.2.3", {}, "", 404),  # no token set: not advertised beyond loopback
    ("10.1.2.3", {}, "s3cret", 401),
    ("10.1.2.3", {"Authorization": "Bearer wrong"}, "s3cret", 401),
    ("10.1.2.3", {"Authorization": "Bearer s3cret"}, "s3cret", 200),
    ("127.0.0.1", {}, "", 200),
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, "", 404),  # a local proxy forwarding a remote client
])
def test_metrics_access(db, settings, remote, headers, token, status):
    from django.test import Client

    settings.FREELLM_METRICS_TOKEN = token
    resp = Client(REMOTE_ADDR=remote).get("/metrics", headers=headers)
    assert resp.status_code == status


def test_two_processes_add_up(gateway_processes, emulator, django_user_model):
    from routing.services import api_key_create

    add_provider(emulator, "groq", ["good"], ["llama"])
    add_chain("auto", ["groq/llama"])
    _, key = api_key_create(user=django_user_model.objects.create_user("bob"), name="t")
    first, second = gateway_processes(2)
    before = _scrape(first.url)
    for gw, n in ((first, 2), (second, 3)):
        for _ in range(n):
            resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {key}"},
                              json={"model": "auto", "messages": HI})
            assert resp.status_code == 200
    after_first, after_second = _scrape(first.url), _scrape(second.url)
    for after in (after_first, after_second):
        total = _value(after, "freellm_requests_total", outcome="ok") - _value(before, "freellm_requests_total",
                                                                               outcome="ok")
        assert total == 5
