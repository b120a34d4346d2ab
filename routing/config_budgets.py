"""The config file's ``users:`` section: each team member's budget, and their keys' (import_config/export_config).

    users:
      - username: alice
        limits: {rpm: 60, rpd: 2000, tpd: 500000}   # over all of alice's keys
        models: [fast, "groq/*"]                     # allowed chains/models (patterns); omitted: every one
        api_keys:
          - name: ci                                 # an existing active key of alice's, by name
            prefix: fl-AbCdEfGh                      # only needed when two active keys share the name
            limits: {rpm: 2}
            models: [fast]

Users and keys must exist already (keys are secrets: created in the admin or by ``create_api_key``, shown
once, never in a file); the section only sets their budgets, exactly as written (a limit left out is no
limit). Nothing secret is exported: a key is named by its name, and by its visible prefix when ambiguous.
With ``--prune`` the budgets of users and keys the section does not list are cleared (only when the file
has a ``users:`` section at all).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from django.contrib.auth import get_user_model
from pydantic import BaseModel, ConfigDict, Field

from providers.config_schema import ConfigError, ConfigSection

from .models import ApiKey, Budget, UserBudget
from .services import budget_set, user_budget_set

NonNegativeInt = Annotated[int, Field(ge=0)]
SECTION = "users"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BudgetLimitsSpec(_Spec):
    rpm: NonNegativeInt | None = None
    rpd: NonNegativeInt | None = None
    tpd: NonNegativeInt | None = None


class ApiKeyBudgetSpec(_Spec):
    name: str = Field(min_length=1, max_length=100)
    prefix: str | None = Field(default=None, min_length=4, max_length=16)
    limits: BudgetLimitsSpec = Field(default_factory=BudgetLimitsSpec)
    models: list[str] = Field(default_factory=list)


class UserSpec(_Spec):
    username: str = Field(min_length=1, max_length=150)
    limits: BudgetLimitsSpec = Field(default_factory=BudgetLimitsSpec)
    models: list[str] = Field(default_factory=list)
    api_keys: list[ApiKeyBudgetSpec] = Field(default_factory=list)


def _values(limits: BudgetLimitsSpec, models: list[str]) -> dict[str, Any]:
    return {"rpm": limits.rpm, "rpd": limits.rpd, "tpd": limits.tpd, "allowed_models": tuple(models)}


def users_apply(users: list[UserSpec], *, prune: bool, report) -> None:
    """Set the budgets the section lists (inside import_config's transaction); ConfigError refuses the file."""
    problems: list[str] = []
    found: list[tuple[Any, UserSpec, list[tuple[ApiKey, ApiKeyBudgetSpec]]]] = []
    seen: dict[str, int] = {}
    for u_index, spec in enumerate(users):
        path = f"{SECTION}[{u_index}]"
        if spec.username in seen:
            problems.append(f"{path}.username: duplicate user {spec.username!r} (first at {SECTION}[{seen[spec.username]}])")
            continue
        seen[spec.username] = u_index
        user = get_user_model().objects.filter(username=spec.username).first()
        if user is None:
            problems.append(f"{path}.username: no user named {spec.username!r} (create team members in the admin)")
            continue
        active = list(ApiKey.objects.filter(user=user, revoked_at__isnull=True))
        keys = []
        for k_index, key_spec in enumerate(spec.api_keys):
            key_path = f"{path}.api_keys[{k_index}]"
            matches = [k for k in active if k.name == key_spec.name
                       and (key_spec.prefix is None or k.prefix == key_spec.prefix)]
            if not matches:
                problems.append(f"{key_path}: {spec.username} has no active API key named {key_spec.name!r}"
                                + (f" with prefix {key_spec.prefix}" if key_spec.prefix else "")
                                + f" (create it with manage.py create_api_key --user {spec.username} "
                                f"--name {key_spec.name})")
            elif len(matches) > 1:
                problems.append(f"{key_path}: {spec.username} has {len(matches)} active keys named "
                                f"{key_spec.name!r}; add `prefix` to say which")
            elif any(k is matches[0] for k, _ in keys):
                problems.append(f"{key_path}: the same key is listed twice")
            else:
                keys.append((matches[0], key_spec))
        found.append((user, spec, keys))
    if problems:
        raise ConfigError(problems)

    listed_users, listed_keys = set(), set()
    for user, spec, keys in found:
        listed_users.add(user.pk)
        existed = UserBudget.objects.filter(user=user).exists()
        if changed := user_budget_set(user=user, **_values(spec.limits, spec.models)):
            report.add(f"~ budget of user {user.get_username()}: {', '.join(changed)}" if existed
                       else f"+ budget of user {user.get_username()}")
        for key, key_spec in keys:
            listed_keys.add(key.pk)
            if changed := budget_set(budget=key, **_values(key_spec.limits, key_spec.models)):
                report.add(f"~ budget of key {user.get_username()}/{key.name} ({key.prefix}…): {', '.join(changed)}")
    if prune:
        for budget in UserBudget.objects.exclude(user__in=listed_users).select_related("user"):
            report.add(f"- budget of user {budget.user.get_username()}")
            budget.delete()
        for key in ApiKey.objects.exclude(pk__in=listed_keys).select_related("user"):
            if key.has_budget:
                budget_set(budget=key, rpm=None, rpd=None, tpd=None, allowed_models=())
                report.add(f"- budget of key {key.user.get_username()}/{key.name} ({key.prefix}…)")


def _budget_item(budget: Budget) -> dict[str, Any]:
    item: dict[str, Any] = {}
    limits = {w: getattr(budget, w) for w in ("rpm", "rpd", "tpd") if getattr(budget, w) is not None}
    if limits:
        item["limits"] = limits
    if budget.allowed_patterns:
        item["models"] = list(budget.allowed_patterns)
    return item


def users_export() -> list[dict[str, Any]]:
    """Every user with a budget or an active key with one; never a key's hash or raw value."""
    budgets = {b.user_id: b for b in UserBudget.objects.all()}
    keys_by_user: dict[int, list[ApiKey]] = {}
    for key in ApiKey.objects.filter(revoked_at__isnull=True).order_by("created_at", "id"):
        keys_by_user.setdefault(key.user_id, []).append(key)
    users = []
    for user in get_user_model().objects.order_by("username"):
        budget = budgets.get(user.pk)
        keys = keys_by_user.get(user.pk, [])
        names = Counter(k.name for k in keys)
        key_items = []
        for key in keys:
            if not key.has_budget:
                continue
            key_item: dict[str, Any] = {"name": key.name}
            if names[key.name] > 1:
                key_item["prefix"] = key.prefix
            key_items.append({**key_item, **_budget_item(key)})
        if (budget is None or not budget.has_budget) and not key_items:
            continue
        item: dict[str, Any] = {"username": user.get_username(), **(_budget_item(budget) if budget else {})}
        if key_items:
            item["api_keys"] = key_items
        users.append(item)
    return users


USERS_SECTION = ConfigSection(name=SECTION, spec=list[UserSpec], apply=users_apply, export=users_export)
