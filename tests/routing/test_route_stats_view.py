"""A scored chain reads the shared route stats at most once a second per process, however many requests ask."""

from __future__ import annotations

import asyncio

from routing.stats import REFRESH_SECONDS, RouteStats, RouteStatsStore, StatsBackend, model_key


class CountingBackend(StatsBackend):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read(self, names):
        self.reads += 1
        await asyncio.sleep(0.02)  # a round trip, during which more requests come
        return await super().read(names)


async def test_requests_that_find_the_view_stale_share_one_read():
    backend = CountingBackend()
    store = RouteStatsStore(backend)
    name = model_key("groq", "llama")
    backend.records[name] = RouteStats(ok=3, at=store.now())
    assert name in await store.view([name])
    store._view_at -= REFRESH_SECONDS  # a second later

    views = await asyncio.gather(*(store.view([name]) for _ in range(30)))

    assert backend.reads == 2
    assert all(name in view for view in views)


async def test_a_model_that_never_served_is_not_read_again_within_the_second():
    backend = CountingBackend()
    store = RouteStatsStore(backend)
    names = [model_key("groq", "never-served")]

    for _ in range(20):
        assert await store.view(names) == {}
    assert backend.reads == 1

    store._view_at -= REFRESH_SECONDS  # a second later
    assert await store.view(names) == {}
    assert backend.reads == 2


async def test_what_this_process_observes_shows_at_once():
    backend = CountingBackend()
    store = RouteStatsStore(backend)
    name = model_key("groq", "llama")
    assert await store.view([name]) == {}

    store.observe("groq", "llama", "key-1", ok=True, ttft=0.2)

    assert name in await store.view([name])
    assert backend.reads == 1

