"""Budgets: what an API key, and every key of its user, may spend and use. Both apply to each request.

Counted in the quota store, the very one that counts the providers' quotas: each key and each user with
limits is a synthetic route (provider ``~apikey`` or ``~user``, model ``*``, key = the row's id) whose
``Limits`` are the budget's rpm/rpd/tpd. So the store's atomic reserve (one Lua script in Redis: no two
gateway processes can both pass the last slot), its minute buckets and UTC day counters, its leases and
its degraded mode (Redis down: each process counts on its own) apply unchanged.

One place enforces it for every dialect: ``routing.api.exchange.execute``, before the router walks
(``admit``: allowed models, then the reservations) and when the request ends (``Admission.finish``: the
real tokens replace the estimate; a request that never reached a provider gives its reservation back).
The limits come with the cached ApiKey (routing.auth), so the steady state makes no database query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from django.core.exceptions import ObjectDoesNotExist

from routing.errors import GatewayError
from routing.quota import get_quota_store
from routing.quota.base import Denied, DenyReason, Lease, Limits, Route

if TYPE_CHECKING:
    from routing.models import ApiKey, Budget
    from routing.router import Resolution

KEY_PROVIDER = "~apikey"
USER_PROVIDER = "~user"
BUDGET_WINDOWS = ("rpm", "rpd", "tpd")
# How a refused window reads in the 429's message: "this key allows 2 requests per minute".
WINDOW_WORDS = {
    DenyReason.RPM: ("rpm", "requests per minute"),
    DenyReason.RPD: ("rpd", "requests per day"),
    DenyReason.TPD: ("tpd", "tokens per day"),
}


@dataclass(frozen=True)
class Scope:
    """One budget that applies to a request: the key's own, or its user's."""

    subject: str  # how messages name it: "this key", "the user alice"
    route: Route
    allowed: tuple[str, ...]  # patterns; empty: every chain and model

    @property
    def limits(self) -> Limits:
        return self.route.limits

    @property
    def counted(self) -> bool:
        return any(getattr(self.limits, w) is not None for w in BUDGET_WINDOWS)


def budget_route(provider: str, row_id: int, budget: Budget) -> Route:
    return Route(provider, "*", str(row_id), Limits(rpm=budget.rpm, rpd=budget.rpd, tpd=budget.tpd))


def user_budget_of(user) -> Budget | None:
    """The user's UserBudget row, or None. Loaded with the key by the auth selector, so no query then."""
    try:
        return user.budget
    except ObjectDoesNotExist:
        return None


async def scopes_of(api_key: ApiKey) -> tuple[Scope, ...]:
    """The budgets of a key, worked out once per cached ApiKey instance (routing.auth)."""
    cached = getattr(api_key, "_freellm_scopes", None)
    if cached is not None:
        return cached
    from routing.models import UserBudget

    user = api_key.user
    if type(user).budget.is_cached(user):
        user_budget = user_budget_of(user)
    else:
        # A key found another way than the auth selector (the keyless identity): one query, then cached.
        user_budget = await UserBudget.objects.filter(user_id=api_key.user_id).afirst()
    scopes = []
    if api_key.id is not None and api_key.has_budget:
        scopes.append(Scope("this key", budget_route(KEY_PROVIDER, api_key.id, api_key), api_key.allowed_patterns))
    if user_budget is not None and user_budget.has_budget:
        subject = f"the user {user.get_username()}"
        scopes.append(Scope(subject, budget_route(USER_PROVIDER, api_key.user_id, user_budget),
                            user_budget.allowed_patterns))
    api_key._freellm_scopes = tuple(scopes)
    return api_key._freellm_scopes


def is_allowed(patterns: tuple[str, ...], name: str) -> bool:
    return not patterns or any(fnmatchcase(name, p) for p in patterns)


def allows_name(scopes: tuple[Scope, ...], name: str) -> bool:
    """Whether every one of a key's ``scopes`` allows the chain or provider/model ``name`` (GET /v1/models)."""
    return all(is_allowed(scope.allowed, name) for scope in scopes)


def narrowed(scopes: tuple[Scope, ...], requested: str, resolution: Resolution) -> Resolution:
    """``resolution`` cut to what every scope allows, or a 403 naming what is allowed.

    A chain is allowed by its name (with or without a strategy suffix). A model named directly (provider/model or a bare id) is allowed by the
    name sent or by each candidate's provider/model name, so ``groq/*`` allows ``llama-3.1-8b`` on Groq
    and not on another provider that serves the same id."""
    for scope in scopes:
        if not scope.allowed or is_allowed(scope.allowed, requested):
            continue
        # "fast:cheapest" (a strategy suffix) is the chain "fast".
        if resolution.chain is not None and is_allowed(scope.allowed, resolution.chain):
            continue
        if resolution.chain is None:
            models = tuple(m for m in resolution.models if is_allowed(scope.allowed, m.name))
            if models:
                resolution = replace(resolution, models=models)
                continue
        raise GatewayError(
            403, f"{scope.subject} may not use '{requested}'; it may use only: {', '.join(scope.allowed)}",
            code="model_not_allowed", param="model",
        )
    return resolution


@dataclass
class Admission:
    """The reservations a request holds against its budgets until it ends."""

    leases: list[Lease] = field(default_factory=list)
    closed: bool = False

    async def finish(self, tokens: int | None) -> None:
        """The request ended: ``tokens`` it really used, or None when it never reached a provider (given back)."""
        if self.closed:
            return
        self.closed = True
        store = get_quota_store()
        for lease in self.leases:
            if tokens is None:
                await store.release(lease)
            else:
                await store.settle(lease, tokens)


async def admit(api_key: ApiKey | None, requested: str, resolution: Resolution,
                est_tokens: int) -> tuple[Resolution, Admission]:
    """Check the allowed models and reserve one request and ``est_tokens`` in every budget, all or none.
    Raises GatewayError: 403 (model not allowed) or 429 naming the limit, with Retry-After."""
    admission = Admission()
    if api_key is None:
        return resolution, admission
    scopes = await scopes_of(api_key)
    if not scopes:
        return resolution, admission
    resolution = narrowed(scopes, requested, resolution)
    store = get_quota_store()
    for scope in scopes:
        if not scope.counted:
            continue
        lease = await store.reserve(scope.route, est_tokens)
        if isinstance(lease, Denied):
            await admission.finish(None)
            raise over_budget(scope, lease, est_tokens)
        admission.leases.append(lease)
    return resolution, admission


def over_budget(scope: Scope, denied: Denied, est_tokens: int) -> GatewayError:
    window, words = WINDOW_WORDS.get(denied.reason, ("rpm", "requests per minute"))
    limit = getattr(scope.limits, window)
    wait = max(1, math.ceil(denied.retry_after))
    message = f"{scope.subject} allows {limit:,} {words}"
    if window == "tpd" and limit is not None and est_tokens > limit:
        message += f" and this request needs about {est_tokens:,}"
    message += f"; retry in ~{wait}s"
    return GatewayError(429, message, code="budget_exceeded", headers={"Retry-After": str(wait)})


# --- usage against the limits (the dashboard) --------------------------------------------------------


@dataclass(frozen=True)
class WindowUsage:
    window: str  # rpm | rpd | tpd
    used: int
    limit: int

    @property
    def percent(self) -> int:
        return 100 if self.limit == 0 else min(100, round(100 * self.used / self.limit))


@dataclass(frozen=True)
class BudgetUsage:
    subject: str  # "key alice/ci (fl-AbCdEfGh…)" or "user alice"
    windows: tuple[WindowUsage, ...]
    allowed: tuple[str, ...]


async def budget_usages(store, budgets: list[tuple[str, Route, tuple[str, ...]]]) -> list[BudgetUsage]:
    """Each (subject, budget route, allowed patterns)'s used vs limit per window, read from ``store`` now."""
    rows = []
    for subject, route, allowed in budgets:
        used = (await store.status(route)).used if any(getattr(route.limits, w) is not None
                                                     for w in BUDGET_WINDOWS) else {}
        windows = tuple(WindowUsage(w, int(used.get(w, 0)), getattr(route.limits, w))
                        for w in BUDGET_WINDOWS if getattr(route.limits, w) is not None)
        rows.append(BudgetUsage(subject, windows, allowed))
    return rows
