"""How a chain orders its members before the router walks them (quota, breaker and gating still filter while it
walks: a strategy only orders).

    priority   the chain's own order (the default; what every chain did before strategies)
    fastest    lowest expected time to an answer: (time to first token + EXPECTED_TOKENS / tokens per second)
               divided by the success probability, i.e. the expected wait including retries elsewhere
    reliable   highest success probability
    balanced   0.5 x success probability + 0.3 x speed (the fastest member's expected time / this one's)
               + 0.2 x the chain order as a capability prior (1 for the first member down to 1/n for the last)
    headroom   most quota left: the best key's share of its tightest window

A member never seen (no stats yet) goes first, so every member gets measured. With probability
FREELLM_EXPLORATION (default 0.05) one member with fewer than FREELLM_EXPLORATION_MIN_SAMPLES recent samples
goes first, so stats of members that lost the ordering stay fresh. A request picks a strategy for a chain
with a suffix: ``auto:fast``, ``auto:reliable``, ``auto:balanced``, ``auto:headroom``, ``auto:priority``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from providers.models import ChainStrategy as Strategy
from routing.stats import RouteStats, RouteStatsStore, model_key

if TYPE_CHECKING:
    from routing.config import ModelInfo
    from routing.quota.base import QuotaStore

# Output tokens an answer is assumed to have when speeds are compared (a short agent turn).
EXPECTED_TOKENS = 256
# Stand-in for a member whose time to first token is not known yet while others' is.
UNKNOWN_TTFT = 5.0
WEIGHTS = {"reliability": 0.5, "speed": 0.3, "prior": 0.2}


# `model: "auto:fast"` → the chain `auto`, ordered fastest first.
SUFFIXES = {"fast": Strategy.FASTEST, "fastest": Strategy.FASTEST, "reliable": Strategy.RELIABLE,
            "balanced": Strategy.BALANCED, "headroom": Strategy.HEADROOM, "priority": Strategy.PRIORITY}


@dataclass(frozen=True)
class Ordering:
    models: tuple[ModelInfo, ...]
    strategy: Strategy
    scores: tuple[tuple[str, str], ...] = ()  # (model name, score as shown in X-FreeLLM-Strategy)
    explored: str = ""  # the member moved first to keep its stats fresh

    def header(self) -> str:
        """``fastest; groq/llama=0.41s, gemini/flash=0.62s`` (members in the order tried)."""
        parts = ", ".join(f"{name}={score}" for name, score in self.scores)
        note = f"; explored {self.explored}" if self.explored else ""
        return f"{self.strategy}; {parts}{note}" if parts else f"{self.strategy}{note}"


def expected_seconds(stats: RouteStats, fallback_ttft: float) -> float:
    ttft = stats.ttft if stats.ttft is not None else fallback_ttft
    tps = stats.tokens_per_second
    return (ttft + (EXPECTED_TOKENS / tps if tps else 0.0)) / stats.success_probability


async def order(
    models: Sequence[ModelInfo],
    strategy: Strategy,
    *,
    stats_store: RouteStatsStore,
    quota_store: QuotaStore,
    rng: random.Random | None = None,
) -> Ordering:
    models = tuple(models)
    # fusion: the panel is drawn in chain order (routing/fusion.py).
    if strategy in (Strategy.PRIORITY, Strategy.FUSION) or len(models) < 2:
        return Ordering(models, strategy)
    rng = rng or random
    seen = await stats_store.view(model_key(m.provider.slug, m.model_id) for m in models)
    stats = {m.name: seen.get(model_key(m.provider.slug, m.model_id)) for m in models}
    unseen = [m for m in models if stats[m.name] is None]
    measured = [m for m in models if stats[m.name] is not None]

    keyed: dict[str, float]  # lower sorts first
    shown: dict[str, str]
    if strategy == Strategy.HEADROOM:
        room = {m.name: await best_headroom(m, quota_store) for m in models}
        keyed = {name: -value for name, value in room.items()}
        shown = {name: f"{value:.2f}" for name, value in room.items()}
        measured, unseen = list(models), []  # headroom needs no history
    else:
        known_ttfts = [s.ttft for s in stats.values() if s is not None and s.ttft is not None]
        fallback = max(known_ttfts) if known_ttfts else UNKNOWN_TTFT
        expected = {m.name: expected_seconds(stats[m.name], fallback) for m in measured}
        reliability = {m.name: stats[m.name].success_probability for m in measured}
        if strategy == Strategy.FASTEST:
            keyed = expected
            shown = {name: f"{value:.2f}s" for name, value in expected.items()}
        elif strategy == Strategy.RELIABLE:
            keyed = {name: -value for name, value in reliability.items()}
            shown = {name: f"{value:.2f}" for name, value in reliability.items()}
        else:
            fastest = min(expected.values(), default=1.0)
            position = {m.name: i for i, m in enumerate(models)}
            balanced = {
                name: WEIGHTS["reliability"] * reliability[name]
                + WEIGHTS["speed"] * (fastest / expected[name] if expected[name] else 1.0)
                + WEIGHTS["prior"] * (1 - position[name] / len(models))
                for name in expected
            }
            keyed = {name: -value for name, value in balanced.items()}
            shown = {name: f"{value:.2f}" for name, value in balanced.items()}

    position = {m.name: i for i, m in enumerate(models)}
    # Ties keep the chain order.
    ranked = sorted(measured, key=lambda m: (keyed[m.name], position[m.name]))
    ordered = [*unseen, *ranked]
    explored = ""
    few = [m for m in ranked if stats.get(m.name) is not None
           and stats[m.name].samples < settings.FREELLM_EXPLORATION_MIN_SAMPLES and m is not ordered[0]]
    if few and rng.random() < settings.FREELLM_EXPLORATION:
        pick = rng.choice(few)
        ordered.remove(pick)
        ordered.insert(0, pick)
        explored = pick.name
    scores = tuple((m.name, shown.get(m.name, "new")) for m in ordered)
    return Ordering(tuple(ordered), strategy, scores, explored)


async def best_headroom(model: ModelInfo, quota_store: QuotaStore) -> float:
    """The most headroom any of the model's keys has (0 without keys), from one batched read."""
    return max(await quota_store.headrooms([model.route(key) for key in model.keys]), default=0.0)
