"""How the router orders a model's keys (routing.router.ordered_keys): most headroom first, rotating among
equals, from a view read for all the keys at most once a second (in one call; read again in slices when a
model has many)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from routing import router
from routing.config import KeyInfo, ModelInfo, ProviderInfo
from routing.quota import set_quota_store
from routing.quota.base import Limits
from tests.polling import wait_until_async


class CountingStore:
    """A quota store whose headroom per key label is given; counts the batched reads."""

    def __init__(self, rooms: dict[str, float], *, delay: float = 0.0) -> None:
        self.rooms = rooms
        self.delay = delay
        self.reads = 0
        self.sizes: list[int] = []  # routes per read

    async def headrooms(self, routes) -> list[float]:
        self.reads += 1
        self.sizes.append(len(routes))
        await asyncio.sleep(self.delay)
        return [self.rooms.get(r.key, 1.0) for r in routes]


def _model(n: int) -> ModelInfo:
    provider = ProviderInfo("p", "openai", "http://x", (), frozenset(), False, Limits(), "UTC")
    keys = tuple(KeyInfo(i, f"k{i}", "s") for i in range(n))
    return ModelInfo(1, provider, "m", "chat", "", None, None, False, False, False, Limits(), keys)


@pytest.fixture
def store():
    router.forget_headroom()
    yield lambda rooms, **kw: _install(CountingStore(rooms, **kw))
    set_quota_store(None)
    router.forget_headroom()


def _install(store: CountingStore) -> CountingStore:
    set_quota_store(store)
    return store


async def test_most_headroom_first_and_equals_take_turns(store):
    quota = store({"k0": 0.2, "k1": 0.9, "k2": 0.9, "k3": 0.5})
    model = _model(4)

    firsts = [(await router.ordered_keys(model)) for _ in range(4)]

    for order in firsts:
        assert [k.label for k in order[2:]] == ["k3", "k0"]
        assert {k.label for k in order[:2]} == {"k1", "k2"}
    assert {order[0].label for order in firsts} == {"k1", "k2"}  # the two best keys take turns
    assert quota.reads == 1


async def test_a_thousand_keys_cost_one_read_however_many_requests_come_at_once(store):
    quota = store({}, delay=0.05)
    model = _model(1000)

    orders = await asyncio.gather(*(router.ordered_keys(model) for _ in range(64)))

    assert quota.reads == 1
    assert all(len(order) == 1000 for order in orders)
    assert len({order[0].label for order in orders}) > 1  # rotation still spreads them


async def test_a_stale_view_is_read_again_once_while_requests_use_the_old_one(store, monkeypatch):
    quota = store({"k0": 1.0, "k1": 0.1}, delay=0.05)
    model = _model(2)
    assert (await router.ordered_keys(model))[0].label == "k0"
    quota.rooms = {"k0": 0.1, "k1": 1.0}
    monkeypatch.setattr(router, "HEADROOM_SECONDS", 0.0)

    during = await asyncio.gather(*(router.ordered_keys(model) for _ in range(10)))
    await asyncio.sleep(0.1)

    assert quota.reads == 2
    assert all(order[0].label == "k0" for order in during)  # the old view, while the new one is read
    assert (await router.ordered_keys(model))[0].label == "k1"


async def test_many_keys_are_read_again_in_slices_with_the_event_loop_free_between_them(store, monkeypatch):
    """One read of a thousand keys held the event loop for about 35 ms (redis-py's work per key); requests in
    flight then waited for all of it."""
    quota = store({})
    model = _model(1000)
    await router.ordered_keys(model)
    assert quota.sizes == [1000]  # the first read, which the request waits for: one call
    quota.rooms = {f"k{i}": 0.1 for i in range(999)}
    monkeypatch.setattr(router, "HEADROOM_SECONDS", 0.0)
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    seen: list[int] = []
    real = quota.headrooms

    async def headrooms(routes):
        seen.append(ticks)
        return await real(routes)

    quota.headrooms = headrooms
    try:
        assert (await router.ordered_keys(model))[0].label != "k999"  # the old view, while the new one is read
        assert await wait_until_async(lambda: sum(quota.sizes[1:]) == 1000)
    finally:
        ticker.cancel()
    slices, paused = quota.sizes[1:], seen[1:]

    assert len(slices) == 1000 // router.HEADROOM_SLICE and max(slices) == router.HEADROOM_SLICE
    assert all(later > earlier for earlier, later in itertools.pairwise(paused))  # the loop ran between slices
    # The new view, once the last slice is in: the one key with headroom left comes first.
    for _ in range(100):
        if (await router.ordered_keys(model))[0].label == "k999":
            break
        await asyncio.sleep(0.01)
    assert (await router.ordered_keys(model))[0].label == "k999"
