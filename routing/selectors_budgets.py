"""Reads of budgets for people (the dashboard): who has one, and how much of it is used right now."""

from __future__ import annotations

from .budgets import KEY_PROVIDER, USER_PROVIDER, BudgetUsage, budget_route, budget_usages
from .models import ApiKey, UserBudget
from .services_quota import run_with_store


def budgets_visible_to(user, *, sees_all: bool) -> list[BudgetUsage]:
    """Every active key's and user's budget (``sees_all``), else ``user``'s own and their keys'."""
    keys = ApiKey.objects.filter(revoked_at__isnull=True).select_related("user").order_by("user__username", "name")
    user_budgets = UserBudget.objects.select_related("user").order_by("user__username")
    if not sees_all:
        keys, user_budgets = keys.filter(user=user), user_budgets.filter(user=user)
    wanted = [(f"user {b.user.get_username()}", budget_route(USER_PROVIDER, b.user_id, b), b.allowed_patterns)
              for b in user_budgets if b.has_budget]
    wanted += [(f"key {k.user.get_username()}/{k.name} ({k.prefix}…)", budget_route(KEY_PROVIDER, k.id, k),
                k.allowed_patterns) for k in keys if k.has_budget]
    if not wanted:
        return []

    async def read(store):
        return await budget_usages(store, wanted)

    return run_with_store(read, None)
