"""One value per running event loop: the shared clients of the hot path (HTTP, Redis).

httpx and redis.asyncio connections belong to the event loop that opened them. Daphne runs one loop, but
tests, ``async_to_sync`` and management commands run others; each gets its own client, forgotten with its
loop (weak keys), so a closed loop never hands a dead connection to the next one. Tasks belong to a loop too:
``OneAtATime`` shares one running task per key among the callers of its loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class PerLoop(Generic[K, V]):
    """``get(key)`` answers this loop's value for ``key``, made by ``factory(key)`` on first use.

    ``usable`` decides whether a value made earlier may still be handed out (e.g. an HTTP client that was
    closed is replaced).
    """

    def __init__(self, factory: Callable[[K], V], *, usable: Callable[[V], bool] | None = None) -> None:
        self._factory = factory
        self._usable = usable
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[K, V]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        if loop not in self._values:
            self._forget_closed_loops()
        values = self._values.setdefault(loop, {})
        value = values.get(key)
        if value is None or (self._usable is not None and not self._usable(value)):
            value = values[key] = self._factory(key)
        return value

    def _forget_closed_loops(self) -> None:
        # A value that refers to its loop (a pooled connection does) keeps the weak key alive: drop them.
        for loop in [loop for loop in self._values if loop.is_closed()]:
            del self._values[loop]

    def pop(self, key: K) -> V | None:
        """Forget this loop's value for ``key`` (the caller closes it)."""
        return self._values.get(asyncio.get_running_loop(), {}).pop(key, None)


class OneAtATime(Generic[K]):
    """At most one task per key at a time: callers that ask for ``key`` with an equal ``tag`` while its task
    runs on their loop get that task, so a burst of requests makes one read or load instead of one each.
    Await it through ``asyncio.shield``: a waiter that leaves must not cancel it for the others."""

    def __init__(self) -> None:
        self._tasks: dict[K, tuple[object, asyncio.Task]] = {}

    def task(self, key: K, tag: object, start: Callable[[], Coroutine[Any, Any, V]]) -> asyncio.Task[V]:
        held, task = self._tasks.get(key, (None, None))
        if task is None or task.done() or held != tag or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(start())
            # Whoever waits sees a failure; a task nobody waited for must not warn "never retrieved".
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._tasks[key] = (tag, task)
        return task

    def clear(self) -> None:
        self._tasks.clear()
