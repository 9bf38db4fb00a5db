"""Background work a component starts with itself and stops with itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["in_background"]


def in_background(coro: Coroutine[Any, Any, None], *, name: str) -> Callable[[], Awaitable[None]]:
    """Run ``coro`` as a task (a follower, a reload loop); returns the stop that cancels it and
    waits for it to end."""
    task = asyncio.get_running_loop().create_task(coro, name=name)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop
