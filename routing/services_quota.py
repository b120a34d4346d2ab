"""Quota and health upkeep, run by Celery beat (routing/tasks.py; the schedule is in freellm/celery.py) and by
the quota admin.

- ``quota_windows_rollup``: the quota store's live counters → ``QuotaWindow`` rows for the admin.
- ``quota_cooldowns_expire``: rows whose cooldown has passed show half-open; stale local state is purged.
  (Cooldowns themselves need no job: every reserve compares timestamps.)
- ``provider_key_probe``: one cheap real call with a key (``providers.services.provider_key_test``), at
  most once per key per FREELLM_PROBE_INTERVAL; the outcome marks the key valid/invalid in the store.

Without Redis the live quota state exists only inside the gateway process, so the worker cannot roll it
up: there the quota windows page rolls up in-process when it is opened, the provider pages read the live
state without writing (``quota_windows_current``), and the worker's rollup is skipped.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from .models import QuotaWindow
from .quota import get_quota_store
from .quota.base import Denied, DenyReason, HealthState, Lease, QuotaStore, Route, RouteStatus
from .quota.local import LocalQuotaStore
from .quota.resilient import ResilientQuotaStore
from .selectors_quota import keys_marked_invalid, quota_routes

log = logging.getLogger(__name__)
T = TypeVar("T")

ROUTE_WINDOWS = ("rpm", "rpd", "tpm", "tpd")
PROVIDER_WINDOWS = ("provider_rpm", "provider_rpd")
PROVIDER_ROW_MODEL = "*"  # provider-wide windows are shown once per provider, on this pseudo model


def quota_store_is_shared() -> bool:
    return bool(settings.REDIS_URL)


def _run_with_store(fn: Callable[[QuotaStore], Awaitable[T]], store: QuotaStore | None) -> T:
    """Run async store calls from sync code (worker, admin). A Redis store of its own is used and closed
    afterwards: the caller's event loop may be a throwaway one, and the gateway's connections belong to
    the gateway's loop. The in-process store is the process-wide one (its state lives there)."""
    if store is not None:
        return async_to_sync(fn)(store)
    shared = get_quota_store()
    if not isinstance(shared, ResilientQuotaStore):
        return async_to_sync(fn)(shared)

    async def with_private_client() -> T:
        from .quota.redis import RedisQuotaStore

        private = RedisQuotaStore(shared.primary.url)
        try:
            return await fn(private)
        finally:
            await private.aclose()

    return async_to_sync(with_private_client)()


# For the other readers of the live quota state from sync code (budgets on the dashboard, alerts).
run_with_store = _run_with_store


def _dt(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def quota_windows_current(*, store: QuotaStore | None = None) -> dict[tuple[str, str, str, str], dict]:
    """What a rollup would write now, read from the quota store and written nowhere: (provider, model, key
    label, window) → QuotaWindow fields. Embedded mode's admin pages show this live (no write on a GET)."""
    routes = quota_routes()

    async def collect(s: QuotaStore) -> list[tuple[Route, RouteStatus]]:
        return [(r, await s.status(r)) for r in routes]

    statuses = _run_with_store(collect, store)
    # The store forgets an auth failure (restart, key flag expiry) while the key stays marked invalid in the
    # database, and the router leaves such a key out: show it as invalid, not as a healthy route.
    invalid_keys = keys_marked_invalid()
    now = timezone.now()
    wanted: dict[tuple[str, str, str, str], dict] = {}
    for route, status in statuses:
        common = {
            "health": HealthState.KEY_INVALID if (route.provider, route.key) in invalid_keys else status.health,
            "cooldown_until": _dt(status.cooldown_until),
            "failures": status.failures,
            "exhausted_until": _dt(status.exhausted_until),
            "updated_at": now,
        }
        for window in ROUTE_WINDOWS:
            wanted[(route.provider, route.model, route.key, window)] = {
                **common,
                "used": status.used.get(window, 0),
                "limit": status.limits.get(window),
                "configured_limit": getattr(route.limits, window),
                "learned_limit": status.learned.get(window),
            }
        for window in PROVIDER_WINDOWS:
            configured = getattr(route.provider_limits, window.removeprefix("provider_"))
            if configured is None:
                continue
            wanted[(route.provider, PROVIDER_ROW_MODEL, "", window)] = {
                "used": status.used.get(window, 0),
                "limit": configured,
                "configured_limit": configured,
                "learned_limit": None,
                "health": HealthState.CLOSED,
                "cooldown_until": None,
                "failures": 0,
                "exhausted_until": None,
                "updated_at": now,
            }
    return wanted


def quota_windows_rollup(*, store: QuotaStore | None = None, in_process: bool = False) -> int:
    """Write the current usage vs limit of every route into QuotaWindow. Returns the rows written.

    ``in_process``: called from the gateway process itself (the admin), where the local store lives.
    """
    if store is None and not quota_store_is_shared() and not in_process:
        log.debug("quota rollup skipped: the quota state lives in the gateway process (no REDIS_URL)")
        return 0
    wanted = quota_windows_current(store=store)
    fields = ["used", "limit", "configured_limit", "learned_limit", "health", "cooldown_until", "failures",
              "exhausted_until", "updated_at"]  # fmt: skip
    with transaction.atomic():
        existing = {(w.provider, w.model, w.key_label, w.window): w for w in QuotaWindow.objects.all()}
        changed, created = [], []
        for ident, values in wanted.items():
            row = existing.pop(ident, None)
            if row is None:
                provider, model, key_label, window = ident
                created.append(QuotaWindow(provider=provider, model=model, key_label=key_label, window=window, **values))
            else:
                for name, value in values.items():
                    setattr(row, name, value)
                changed.append(row)
        QuotaWindow.objects.bulk_create(created)
        QuotaWindow.objects.bulk_update(changed, fields)
        # Routes that no longer exist (key or model removed / disabled).
        QuotaWindow.objects.filter(pk__in=[w.pk for w in existing.values()]).delete()
    return len(wanted)


def quota_cooldowns_expire(*, now: datetime | None = None) -> int:
    """Show routes whose cooldown is over as half-open (their next request is the trial); purge expired
    in-process lease records. Returns the rows updated."""
    now = now or timezone.now()
    updated = QuotaWindow.objects.filter(health=HealthState.OPEN, cooldown_until__lte=now).update(health=HealthState.HALF_OPEN)
    store = get_quota_store()
    local = store.fallback if isinstance(store, ResilientQuotaStore) else store
    if isinstance(local, LocalQuotaStore):
        local.purge()
    return updated


def quota_cooldown_clear(*, windows, store: QuotaStore | None = None) -> int:
    """Admin action: close the circuit of the selected rows' routes and re-enable their keys."""
    routes = {Route(w.provider, w.model, w.key_label) for w in windows if w.model != PROVIDER_ROW_MODEL}
    _routes_cooldown_clear(routes, store)
    _keys_retry({(route.provider, route.key) for route in routes if route.key})
    return len(routes)


def provider_keys_cooldown_clear(*, keys, store: QuotaStore | None = None) -> int:
    """Admin action on provider keys: close the circuit of every route of these keys and re-enable them.
    Returns the routes cleared."""
    wanted = {(key.provider.slug, key.label) for key in keys}
    routes = {Route(r.provider, r.model, r.key) for r in quota_routes() if (r.provider, r.key) in wanted}
    _routes_cooldown_clear(routes, store)
    # Every selected key, also one without an enabled model (no route) that still carries the invalid mark.
    _keys_retry(wanted)
    return len(routes)


def _routes_cooldown_clear(routes: set[Route], store: QuotaStore | None) -> None:
    async def clear(s: QuotaStore) -> None:
        for route in routes:
            await s.clear_cooldown(route)

    _run_with_store(clear, store)
    for route in routes:
        QuotaWindow.objects.filter(provider=route.provider, model=route.model, key_label=route.key).update(
            health=HealthState.CLOSED, cooldown_until=None, failures=0, exhausted_until=None
        )


def _keys_retry(keys: set[tuple[str, str]]) -> None:
    """The router leaves keys marked invalid out of the routing config, so clearing the store alone would
    not bring such a key back: reset the mark too (the next call or probe tests the key again)."""
    from providers.models import ProviderKey
    from providers.services import provider_key_status_reset

    if not keys:
        return
    invalid = ProviderKey.objects.select_related("provider").filter(
        status=ProviderKey.Status.INVALID,
        provider__slug__in={slug for slug, _ in keys},
        label__in={label for _, label in keys},
    )
    provider_key_status_reset(
        keys=[key for key in invalid if (key.provider.slug, key.label) in keys],
        detail="re-enabled by an admin (clear cooldown); the next call or probe tests it",
    )


# --- health probes ---------------------------------------------------------------------------------


def _claim_probe(key_id: int, interval: float) -> bool:
    """True if nobody probed this key within ``interval`` seconds (and marks it probed now)."""
    if quota_store_is_shared():
        # Redis-backed cache: one claim across every worker process.
        return cache.add(f"freellm:probe:{key_id}", "1", timeout=int(interval))
    # Embedded: the worker's pool processes share var/, not a cache.
    marker = settings.VAR_DIR / "probes" / str(key_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        if time.time() - marker.stat().st_mtime < interval:
            return False
    except FileNotFoundError:
        pass
    marker.touch()
    return True


def provider_key_probe(*, key_id: int, interval: float | None = None, store: QuotaStore | None = None):
    """Test one key with a real cheap call, at most once per interval.

    The call is reserved in the quota store like any other, so a probe never calls a key whose quota is
    spent or that is cooling down; the probe of a half-open route is its one trial, and its outcome
    closes or reopens the circuit. A key marked invalid is probed regardless (nothing else calls it; this
    is what revives it). Returns the KeyTestResult, or None when nothing was called (probed recently, no
    quota or cooling down, or the key is gone)."""
    from providers.models import ProviderKey
    from providers.services import provider_key_test

    interval = settings.FREELLM_PROBE_INTERVAL if interval is None else interval
    key = ProviderKey.objects.select_related("provider").filter(pk=key_id, enabled=True).first()
    if key is None or not _claim_probe(key_id, interval):
        return None
    route = _probe_route(key)
    lease: Lease | None = None
    if route is not None:

        async def reserve(s: QuotaStore) -> Lease | Denied:
            return await s.reserve(route, 1)

        reserved = _run_with_store(reserve, store)
        if isinstance(reserved, Denied) and reserved.reason != DenyReason.KEY_INVALID:
            log.info("health probe of %s skipped: %s", key, reserved.reason)
            return None
        lease = reserved if isinstance(reserved, Lease) else None
    result = None
    try:
        result = provider_key_test(key=key)
    finally:
        if route is not None:
            _run_with_store(functools.partial(_probe_settle, route, lease, result), store)
    if result.ok is not None:
        route = Route(key.provider.slug, "", key.label)

        async def mark(s: QuotaStore) -> None:
            await s.set_key_invalid(route, not result.ok)

        _run_with_store(mark, store)
    log.info("health probe of %s: %s", key, result.detail)
    return result


def _probe_route(key) -> Route | None:
    """The quota route of the call ``provider_key_test`` makes with this key."""
    from providers.services import provider_key_test_model

    model = provider_key_test_model(key.provider)
    if model is None:
        return None
    wanted = (key.provider.slug, model.model_id, key.label)
    return next((r for r in quota_routes() if (r.provider, r.model, r.key) == wanted), None)


async def _probe_settle(route: Route, lease: Lease | None, result, s: QuotaStore) -> None:
    called = result is not None and (result.ok is not None or result.error is not None)
    if lease is not None:
        if called:
            await s.settle(lease, 1)
        else:
            await s.release(lease)
    if called:
        error = result.error
        if error is None:
            await s.record(route, None)
        else:
            await s.record(route, error.kind, retry_after=error.retry_after, headers=error.headers,
                           message=error.message)
