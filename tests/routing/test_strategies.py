"""How each strategy orders a chain's members from their stats (routing/strategies.py), without a gateway."""

from __future__ import annotations

import random

import pytest

from routing.config import KeyInfo, ModelInfo, ProviderInfo
from routing.quota.base import Limits
from routing.stats import RouteStatsStore
from routing.strategies import Strategy, order


def _model(slug: str) -> ModelInfo:
    provider = ProviderInfo(slug, "openai", "http://x", (), frozenset(), False, Limits(), "UTC")
    return ModelInfo(1, provider, "m", "chat", "", None, None, False, False, False, Limits(),
                     (KeyInfo(1, "k", "s"),))


A, B, C = _model("a"), _model("b"), _model("c")


class FixedHeadroom:
    def __init__(self, by_provider: dict[str, float]) -> None:
        self.by_provider = by_provider

    async def headrooms(self, routes) -> list[float]:
        return [self.by_provider[route.provider] for route in routes]


def _stats(**members: tuple[int, int, float]) -> RouteStatsStore:
    """members: provider → (successes, failures, time to first token)."""
    store = RouteStatsStore(now=lambda: 1000.0)
    for slug, (ok, fail, ttft) in members.items():
        for i in range(ok + fail):
            store.observe(slug, "m", "k", ok=i < ok, ttft=ttft, tokens=100, gen_seconds=1.0)
    return store


async def _order(strategy, stats, quota=None, rng=None):
    return await order((A, B, C), strategy, stats_store=stats, quota_store=quota or FixedHeadroom({}),
                       rng=rng or random.Random(0))


@pytest.fixture(autouse=True)
def _no_exploration(settings):
    settings.FREELLM_EXPLORATION = 0.0


async def test_priority_keeps_the_chain_order():
    assert (await _order(Strategy.PRIORITY, _stats(c=(9, 0, 0.1)))).models == (A, B, C)


async def test_fastest_divides_the_expected_time_by_the_success_probability():
    ordering = await _order(Strategy.FASTEST, _stats(a=(10, 0, 2.0), b=(10, 0, 0.5), c=(1, 9, 0.1)))
    # c is quickest but fails 9 in 10: (0.1 + 256/100) / (2/12) = 15.96 s, worse than a's 4.56 s.
    assert [m.provider.slug for m in ordering.models] == ["b", "a", "c"]
    assert ordering.header().startswith("fastest; b/m=3.3")


async def test_reliable_and_unseen_members_first():
    ordering = await _order(Strategy.RELIABLE, _stats(a=(5, 5, 0.1), b=(9, 1, 0.1)))
    assert [m.provider.slug for m in ordering.models] == ["c", "b", "a"]  # c never seen: tried first
    assert ordering.scores[0] == ("c/m", "new")


async def test_balanced_weighs_reliability_speed_and_the_chain_order():
    # Equal stats: the chain order (the capability prior) decides.
    same = await _order(Strategy.BALANCED, _stats(a=(5, 0, 1.0), b=(5, 0, 1.0), c=(5, 0, 1.0)))
    assert same.models == (A, B, C)
    # c far more reliable and faster outweighs being last in the chain.
    better = await _order(Strategy.BALANCED, _stats(a=(2, 8, 3.0), b=(2, 8, 3.0), c=(10, 0, 0.2)))
    assert better.models[0] is C


async def test_headroom_orders_by_the_best_key_and_needs_no_history():
    ordering = await _order(Strategy.HEADROOM, _stats(), FixedHeadroom({"a": 0.1, "b": 0.9, "c": 0.5}))
    assert ordering.models == (B, C, A)


async def test_exploration_moves_a_member_with_few_samples_first(settings):
    settings.FREELLM_EXPLORATION = 1.0
    stats = _stats(a=(20, 0, 0.1), b=(20, 0, 0.2), c=(2, 0, 3.0))
    ordering = await _order(Strategy.FASTEST, stats)
    assert ordering.models[0] is C and ordering.explored == "c/m"
    settings.FREELLM_EXPLORATION = 0.0
    assert (await _order(Strategy.FASTEST, stats)).models[0] is A
