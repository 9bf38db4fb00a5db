"""Background work a component starts with itself and stops with itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from llmgw.kit.logging import get_logger

__all__ = ["Background", "Deferred", "in_background"]

_log = get_logger(__name__)


def in_background(coro: Coroutine[Any, Any, None], *, name: str) -> Callable[[], Awaitable[None]]:
    """Run ``coro`` as a task (a follower, a reload loop); returns the stop that cancels it and
    waits for it to end."""
    task = asyncio.get_running_loop().create_task(coro, name=name)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


class Background:
    """Fire-and-forget tasks, held until they end: the event loop keeps only weak references, so
    a task nobody holds can vanish mid-flight. Guarding failures is the caller's business."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, timeout_s: float) -> None:
        """Until every task has ended, or ``timeout_s``."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def cancel(self, timeout_s: float) -> None:
        """Cancel every task and wait (at most ``timeout_s``) for them to end."""
        for task in self._tasks:
            task.cancel()
        await self.wait(timeout_s)


class Deferred:
    """Work that follows a reply and must not delay it.

    Callbacks run together, in the order they were scheduled, ``delay_s`` after the first of
    them (0: on the next loop turn, once the reply has been handed to gRPC). Events and metrics
    wait a little longer: done at once, that work shares the CPU with sending the reply and
    measurably delays it on a busy machine (docs/benchmarks.md); under load one timer then
    covers every request of the interval. Failures are logged, never raised. ``flush`` runs what
    waits at once (drain, stop)."""

    __slots__ = ("_delay", "_pending", "_timer")

    def __init__(self, delay_s: float) -> None:
        self._delay = delay_s
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._timer: asyncio.TimerHandle | None = None

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        self._pending.append((fn, args))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        for fn, args in pending:
            try:
                fn(*args)
            except Exception as exc:  # bookkeeping must not crash anything
                _log.warning("deferred_failed", callback=getattr(fn, "__qualname__", repr(fn)), error=repr(exc))
