"""Fire-and-forget work off the response path: request log batches, the session mirror, stream settling."""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Coroutine

from asgiref.sync import sync_to_async
from django.db import close_old_connections

_running: set[asyncio.Task] = set()
# The tasks serving gateway requests (finished ones drop out by themselves), for shutdown.
_requests: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()


def spawn(coro: Coroutine, *, uses_orm: bool = True) -> asyncio.Task:
    """Run ``coro`` as a task of its own on the running loop, keeping a strong reference to it.

    The task gets an empty context: one inheriting the request's asgiref ThreadSensitiveContext would, after
    the request ended, get a fresh thread (and database connection) per task that nobody ever closes.
    ``uses_orm=False``: the task itself queries nothing, so it is spared the thread hop that tidies the
    connections afterwards (a stream's settle, once per streamed request).
    """
    task = asyncio.get_running_loop().create_task(_and_tidy(coro) if uses_orm else coro,
                                                  context=contextvars.Context())
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


async def _and_tidy(coro: Coroutine) -> None:
    try:
        await coro
    finally:
        # Background ORM calls share asgiref's one sync thread; no request signal closes its connection.
        await sync_to_async(close_old_connections)()


def background_idle() -> bool:
    return not _running


def request_task_track() -> None:
    """Note the running task as one serving a gateway request (see ``shutdown_drain``)."""
    task = asyncio.current_task()
    if task is not None:
        _requests.add(task)


async def shutdown_drain(*, timeout: float = 10.0) -> bool:
    """The server is stopping: cancel the requests still in flight, which then settle their quota and log
    their row like a client that left, and wait for the background work (``background_drain``). Needed
    because daphne cancels its connection handlers on SIGTERM, and Django runs each view in a task of
    its own that such a cancellation does not reach."""
    for task in list(_requests):
        task.cancel()
    return await background_drain(timeout=timeout)


async def background_drain(*, timeout: float = 10.0, grace: float = 0.1) -> bool:
    """Wait until no background task is left, at most ``timeout`` seconds; True if none is. For shutdown:
    request log rows still queued, stream settles. ``grace``: requests cancelled by the shutdown run their
    ``finally`` blocks (which may spawn more work) in the loop iterations right after it begins."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        if _running:
            await asyncio.wait(set(_running), timeout=left)
            continue
        await asyncio.sleep(min(grace, left))
        if not _running:
            return True
    return not _running
