"""Alerts: rules that look at the gateway's state, incidents that remember what they found, and the webhook.

Rules (each finds the problems present now, as ``Condition``s named by a key such as ``key_invalid:groq/k1``):

- ``key_invalid``: an enabled provider key marked invalid (the provider refused it; the router leaves it out).
- ``route_failing``: a route whose upstream calls failed at FREELLM_ALERT_FAILURE_RATE or more over the last
  FREELLM_ALERT_WINDOW seconds (at least FREELLM_ALERT_MIN_CALLS calls), from the request log's trails.
- ``chain_unusable``: an enabled chain none of whose members has a key that may be called now (no key, keys
  invalid, circuits open, quota exhausted), from the quota store.
- ``quota_forecast``: a route's daily window (rpd/tpd) that, at today's pace, runs out before its reset.
- ``request_log_drops``: request-log rows dropped (``freellm_request_log_dropped_total`` of every process of
  this host, read from the Prometheus multiprocess files) within the last FREELLM_ALERT_WINDOW seconds.

``alerts_evaluate`` reconciles the conditions with the open ``Incident`` rows: a new one opens an incident, a
present one refreshes ``last_seen``, a gone one resolves it. It returns what to tell the webhook;
``incident_notify`` (run by the Celery worker, with retries) POSTs Slack-compatible JSON once per opening
and once per recovery, recorded on the incident so that "once" holds across restarts.

Where the rules run: the worker, every minute (analytics.tasks.alerts_evaluate). The quota-store rules need
the live quota state, which without Redis exists only inside the gateway process: there the worker skips
them and the gateway evaluates them itself when an admin page is shown (at most every LIVE_EVERY seconds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import httpx
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import Incident, RequestLog
from .selectors import trail_stats

log = logging.getLogger(__name__)
Rule = Incident.Rule

# Rules that read the live quota state (see the module docstring).
LIVE_RULES = frozenset({Rule.CHAIN_UNUSABLE, Rule.QUOTA_FORECAST})
ALL_RULES = frozenset(Rule)
# A daily window is forecast only once this share of it is used (early in the day one request is no pace).
FORECAST_MIN_SHARE = 0.2
LIVE_EVERY = 30.0
_DROPS_CACHE_KEY = "freellm:alerts:request-log-drops"


class Event(StrEnum):
    FIRED = "fired"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Condition:
    rule: Rule
    subject: str
    summary: str

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.subject}"


# --- the rules ---------------------------------------------------------------------------------------


def key_invalid_conditions() -> list[Condition]:
    from providers.models import ProviderKey

    keys = ProviderKey.objects.filter(enabled=True, provider__enabled=True, status=ProviderKey.Status.INVALID)
    return [
        Condition(Rule.KEY_INVALID, f"{slug}/{label}",
                  f"Provider key {slug}/{label} is invalid" + (f": {detail}" if detail else ""))
        for slug, label, detail in keys.values_list("provider__slug", "label", "status_detail")
    ]


def route_failing_conditions(now: datetime) -> list[Condition]:
    window = settings.FREELLM_ALERT_WINDOW
    stats = trail_stats(RequestLog.objects.all(), now - timedelta(seconds=window))
    threshold = settings.FREELLM_ALERT_FAILURE_RATE
    return [
        Condition(Rule.ROUTE_FAILING, r.route,
                  f"Route {r.route} failed {r.failures} of {r.calls} calls ({r.failure_rate:.0%}) in the last "
                  f"{window // 60} min, mostly {r.top_kind}")
        for r in stats.routes.values()
        if r.calls >= settings.FREELLM_ALERT_MIN_CALLS and r.failure_rate >= threshold
    ]


def chain_unusable_conditions(store) -> list[Condition]:
    from routing.config import load_routing_config
    from routing.quota.base import HealthState
    from routing.services_quota import run_with_store

    config = load_routing_config()

    async def usable_chains(s) -> dict[str, bool]:
        answers = {}
        for chain in config.chains.values():
            usable = False
            for model in chain.models:
                for key in model.keys:
                    route = model.route(key)
                    status = await s.status(route)
                    if status.health in (HealthState.CLOSED, HealthState.HALF_OPEN) and not status.key_invalid \
                            and await s.headroom(route) > 0:
                        usable = True
                        break
                if usable:
                    break
            answers[chain.name] = usable
        return answers

    usable = run_with_store(usable_chains, store)
    return [
        Condition(Rule.CHAIN_UNUSABLE, name,
                  f"Chain {name} has no usable member: every model's keys are missing, invalid, cooling down or "
                  "out of quota")
        for name, ok in usable.items() if not ok
    ]


def _day_elapsed(now: float, tz: str) -> float:
    try:
        zone = ZoneInfo(tz or "UTC")
    except Exception:
        zone = ZoneInfo("UTC")
    local = datetime.fromtimestamp(now, zone)
    return now - local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def quota_forecast_conditions(store, now: datetime) -> list[Condition]:
    from routing.quota import policy
    from routing.selectors_quota import quota_routes
    from routing.services_quota import run_with_store

    routes = quota_routes()

    async def statuses(s):
        return [await s.status(r) for r in routes]

    found = []
    at = now.timestamp()
    for route, status in zip(routes, run_with_store(statuses, store), strict=True):
        elapsed = _day_elapsed(at, route.daily_reset_tz)
        left = policy.seconds_to_midnight(at, route.daily_reset_tz)
        for window, unit in (("rpd", "requests"), ("tpd", "tokens")):
            limit = status.limits.get(window)
            used = int(status.used.get(window, 0))
            if not limit or elapsed <= 0 or used < FORECAST_MIN_SHARE * limit:
                continue
            pace = used / elapsed
            if used + pace * left < limit:
                continue
            runs_out = datetime.fromtimestamp(at + max(0.0, (limit - used) / pace), UTC) if pace else now
            found.append(Condition(
                Rule.QUOTA_FORECAST, f"{route}:{window}",
                f"{route}: {used:,} of {limit:,} {unit} used today; at this pace the daily quota runs out at "
                f"~{runs_out:%H:%M} UTC, {left / 3600:.1f} h before its reset",
            ))
    return found


def request_log_drops_total() -> float:
    """freellm_request_log_dropped_total over every process of this host (the multiprocess files)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return sum(s.value for metric in registry.collect() for s in metric.samples
               if s.name == "freellm_request_log_dropped_total")


def request_log_drop_conditions(now: datetime) -> list[Condition]:
    """Open while rows were dropped within the last FREELLM_ALERT_WINDOW seconds. The count of the previous
    evaluation is kept in the cache (shared with Redis; per process otherwise, where only the worker asks)."""
    total = request_log_drops_total()
    at = now.timestamp()
    seen = cache.get(_DROPS_CACHE_KEY)
    last_total, last_drop_at, first_total = seen if seen else (total, 0.0, total)
    if total < last_total:  # the counters restarted with the gateway
        last_total = first_total = 0.0
    if total > last_total:
        if at - last_drop_at > settings.FREELLM_ALERT_WINDOW:
            first_total = last_total
        last_drop_at = at
    cache.set(_DROPS_CACHE_KEY, (total, last_drop_at, first_total), timeout=None)
    if not last_drop_at or at - last_drop_at > settings.FREELLM_ALERT_WINDOW:
        return []
    lost = int(total - first_total)
    return [Condition(Rule.REQUEST_LOG_DROPS, "request_log",
                      f"{lost:,} request-log row(s) could not be written and were dropped (last at "
                      f"{datetime.fromtimestamp(last_drop_at, UTC):%H:%M:%S} UTC)")]


def conditions_now(rules: Iterable[Rule], *, now: datetime, store=None) -> list[Condition]:
    rules = set(rules)
    found: list[Condition] = []
    if Rule.KEY_INVALID in rules:
        found += key_invalid_conditions()
    if Rule.ROUTE_FAILING in rules:
        found += route_failing_conditions(now)
    if Rule.CHAIN_UNUSABLE in rules:
        found += chain_unusable_conditions(store)
    if Rule.QUOTA_FORECAST in rules:
        found += quota_forecast_conditions(store, now)
    if Rule.REQUEST_LOG_DROPS in rules:
        found += request_log_drop_conditions(now)
    return found


# --- incidents ------------------------------------------------------------------------------------------


def rules_for_worker() -> frozenset[Rule]:
    """Everything with Redis (the worker reads the shared quota state); else what it can see from here."""
    return ALL_RULES if settings.REDIS_URL else ALL_RULES - LIVE_RULES


def alerts_evaluate(*, rules: Iterable[Rule] = ALL_RULES, now: datetime | None = None,
                    store=None) -> list[tuple[int, str]]:
    """Open, refresh and resolve incidents for ``rules``. Returns (incident id, Event) for the webhook."""
    rules = set(rules)
    now = now or timezone.now()
    conditions = {c.key: c for c in conditions_now(rules, now=now, store=store)}
    to_notify: list[tuple[int, str]] = []
    open_incidents = {i.key: i for i in Incident.objects.filter(state=Incident.State.OPEN, rule__in=rules)}
    for key, condition in conditions.items():
        incident = open_incidents.get(key)
        if incident is not None:
            Incident.objects.filter(pk=incident.pk).update(last_seen=now, summary=condition.summary[:500])
            continue
        try:
            with transaction.atomic():
                incident = Incident.objects.create(rule=condition.rule, key=key, summary=condition.summary[:500],
                                                   first_seen=now, last_seen=now)
        except IntegrityError:
            continue  # another evaluator opened it a moment ago
        log.warning("alert: %s", condition.summary)
        to_notify.append((incident.pk, Event.FIRED))
    for key, incident in open_incidents.items():
        if key in conditions:
            continue
        resolved = Incident.objects.filter(pk=incident.pk, state=Incident.State.OPEN).update(
            state=Incident.State.RESOLVED, resolved_at=now)
        if resolved:
            log.info("alert resolved: %s", incident.summary)
            to_notify.append((incident.pk, Event.RESOLVED))
    return to_notify


def open_incidents() -> list[Incident]:
    return list(Incident.objects.filter(state=Incident.State.OPEN).order_by("first_seen"))


_live_evaluated_at = 0.0


def live_alerts_evaluate_if_due() -> list[tuple[int, str]]:
    """Without Redis, the gateway process evaluates the rules that need its quota state (see the docstring),
    at most every LIVE_EVERY seconds. With Redis the worker does it all and this does nothing."""
    global _live_evaluated_at
    if settings.REDIS_URL or time.monotonic() - _live_evaluated_at < LIVE_EVERY:
        return []
    _live_evaluated_at = time.monotonic()
    try:
        return alerts_evaluate(rules=LIVE_RULES)
    except Exception:  # an admin page must render even if the quota store cannot be read
        log.exception("alert evaluation in the gateway failed")
        return []


# --- the webhook ------------------------------------------------------------------------------------------


class AlertDeliveryError(Exception):
    """The webhook did not accept the message (the task retries)."""


def webhook_payload(incident: Incident, event: str) -> dict:
    """Slack-compatible: ``text`` for any receiver, ``blocks`` for Slack's layout."""
    label = incident.get_rule_display()
    if event == Event.FIRED:
        text = f":rotating_light: freellm alert: {label}. {incident.summary}"
        context = f"first seen {incident.first_seen:%Y-%m-%d %H:%M:%S} UTC · `{incident.key}`"
    else:
        lasted = (incident.resolved_at or timezone.now()) - incident.first_seen
        text = f":white_check_mark: freellm recovered: {label}. {incident.summary}"
        context = f"resolved after {int(lasted.total_seconds() // 60)} min · `{incident.key}`"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def incident_notify(*, incident_id: int, event: str) -> bool:
    """POST the incident's opening or recovery to FREELLM_ALERT_WEBHOOK, unless already told. True if sent.
    Raises AlertDeliveryError (or httpx's) when the receiver fails, for the task to retry."""
    url = settings.FREELLM_ALERT_WEBHOOK
    if not url:
        return False
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None:
        return False
    mark = "notified_at" if event == Event.FIRED else "recovery_notified_at"
    if getattr(incident, mark) is not None:
        return False
    response = httpx.post(url, json=webhook_payload(incident, event), timeout=10.0)
    if response.status_code >= 300:
        raise AlertDeliveryError(f"the alert webhook answered {response.status_code}")
    Incident.objects.filter(pk=incident_id, **{f"{mark}__isnull": True}).update(**{mark: timezone.now()})
    return True
