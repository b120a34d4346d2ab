"""The one way tests wait for something that happens off the current thread: poll, never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], *, timeout: float = 5.0, interval: float = 0.02,
               alive: Callable[[], bool] | None = None) -> T:
    """Ask `check` every `interval` seconds until it answers something truthy or `timeout` passes, and return
    its last answer, so a caller writes `assert wait_until(...)` with its own message.

    `alive`, when given, is asked before each try: once it says False (a process or thread that died) the wait
    ends at once, since `check` will not come true any more; the caller tells that case apart itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            return check()
        answer = check()
        if answer or time.monotonic() >= deadline:
            return answer
        time.sleep(interval)


async def wait_until_async(check: Callable[[], T], *, timeout: float = 5.0, interval: float = 0.02) -> T:
    """`wait_until` for a test on the event loop: sleeps with asyncio, so the tasks it waits for can run."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer or time.monotonic() >= deadline:
            return answer
        await asyncio.sleep(interval)
